"""The package's shape, side by side with an earlier revision (issue 24): help time, module sizes, import cycles,
repeated code.

What it measures, for this checkout and for ``--baseline REV`` (its ``src/`` extracted with ``git archive`` into a
temporary folder and run with this checkout's Python, so both use the same libraries):

* ``deltacd --help`` and ``deltacd VERB --help``: wall time of a fresh process, median of ``--repeat`` runs;
* lines of Python in the package, the largest module, modules over 600 lines;
* import cycles between modules (module- and function-level imports; imports under ``if TYPE_CHECKING:`` are
  type annotations, not run, and are left out);
* pairs of repeated code (the ``duplicates`` tool, when it is on PATH).

Usage: ``python benchmarks/architecture.py --baseline a24104f`` (prints a Markdown table; writes it to
``benchmarks/results/architecture.md`` with ``--write``).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERBS = ("", "detect", "damage", "run", "evaluate")


def help_seconds(src: Path, verb: str, repeat: int) -> float:
    """Median wall time of ``deltacd [VERB] --help`` in a fresh interpreter importing deltacd from ``src``."""
    argv = [verb, "--help"] if verb else ["--help"]
    code = f"import sys; sys.path.insert(0, {str(src)!r}); from deltacd.cli import main; sys.exit(main({argv!r}))"
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def modules(src: Path) -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in (src / "deltacd").rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        package = name.endswith(".__init__")
        found[name.removesuffix(".__init__")] = (path, package)
    return found


def _runtime_imports(tree: ast.AST) -> list[ast.AST]:
    """Import nodes that run: those under ``if TYPE_CHECKING:`` are left out."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def import_cycles(src: Path) -> list[list[str]]:
    """Strongly connected groups of modules that import each other (Tarjan)."""
    mods = modules(src)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, package) in mods.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if package else name.split(".")[:-1]
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                targets = [a.name for a in node.names]
            target = next((t for t in targets if t in mods and t != name), None)
            if target:
                graph[name].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def duplicate_pairs(src: Path) -> str:
    if shutil.which("duplicates") is None:
        return "n/a (duplicates not on PATH)"
    out = subprocess.run(["duplicates", "--repo", str(src), "--seconds", "120"], capture_output=True, text=True).stdout
    return out.split(" pairs", 1)[0] if " pairs" in out else out.splitlines()[0]


def measure(src: Path, repeat: int) -> dict[str, str]:
    sizes = {name: sum(1 for _ in path.open()) for name, (path, _) in modules(src).items()}
    largest = max(sizes, key=sizes.get)
    over = sorted((n for n, s in sizes.items() if s > 600), key=lambda n: -sizes[n])
    row = {f"`deltacd {v + ' ' if v else ''}--help` (s)": f"{help_seconds(src, v, repeat):.2f}" for v in VERBS}
    cycles = import_cycles(src)
    row |= {
        "Python lines in the package": f"{sum(sizes.values()):,}",
        "modules": str(len(sizes)),
        "largest module (lines)": f"{largest} ({sizes[largest]})",
        "modules over 600 lines": str(len(over)) + (f": {', '.join(f'{n} ({sizes[n]})' for n in over)}" if over else ""),
        "import cycles between modules": str(len(cycles)) + (f": {'; '.join(' <-> '.join(c) for c in cycles)}" if cycles else ""),
        "pairs of repeated code (6+ lines)": duplicate_pairs(src),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision to compare with (e.g. a24104f)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="also write benchmarks/results/architecture.md")
    args = parser.parse_args()
    columns = {"this checkout": measure(REPO / "src", args.repeat)}
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "src"], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            columns = {args.baseline: measure(Path(tmp) / "src", args.repeat)} | columns
    names = list(columns)
    lines = [f"Machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; Python {sys.version.split()[0]}; "
             f"median of {args.repeat} fresh processes per help time.", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in columns[names[-1]]:
        lines.append(f"| {key} | " + " | ".join(columns[n][key] for n in names) + " |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        (REPO / "benchmarks" / "results" / "architecture.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
