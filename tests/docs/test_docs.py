"""The user guide cannot drift from the CLI: every command it shows parses, and the worked examples run.

Every ``deltacd ...`` line of a bash block in docs/guide/*.md and README.md is parsed by the real
argument parser (a renamed verb or flag fails here). Blocks preceded by ``<!-- docs-check: run -->``
are run, page by page in the order a reader follows them, in a sandbox laid out like the
repository: ``work/`` (the current folder, holding a copy of ``examples/*.yaml``) beside a link
``shared -> ../shared``, so that the guide's relative paths (``../shared/data/...``,
``examples/...``, ``out/...``) resolve as they do for a user.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs
from deltacd.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide"
#: Pages whose worked examples run, in reading order (later pages use the earlier ones' outputs).
RUN_ORDER = ("commands.md", "first-run.md", "studies.md", "extending.md")
MARK = "<!-- docs-check: run -->"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[tuple[str, str, bool]]:
    """(language, code, marked to run) of each fenced bash / python block of a page."""
    text = page.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text[: m.start()].rstrip().endswith(MARK)) for m in BLOCK.finditer(text)]


def _commands(code: str) -> list[list[str]]:
    """The ``deltacd`` command lines of a bash block (continuations joined, comments and heredocs skipped)."""
    joined = re.sub(r"\\\n\s*", " ", code)
    joined = re.sub(r"<<'(\w+)'\n.*?^\1$", "", joined, flags=re.S | re.M)
    return [shlex.split(line, comments=True)[1:] for line in joined.splitlines() if line.strip().startswith("deltacd ")]


def _pages() -> list[Path]:
    return [*sorted(GUIDE.glob("*.md")), ROOT / "README.md"]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_every_command_shown_parses(page: Path) -> None:
    commands = [c for lang, code, _ in _blocks(page) if lang == "bash" for c in _commands(code)]
    assert commands or page.name in ("install.md", "outputs.md", "troubleshooting.md", "extending.md"), page.name
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse exits on an unknown verb or flag
            pytest.fail(f"{page.name}: `deltacd {' '.join(argv)}` does not parse (exit {exc.code})")


def test_the_guide_shows_every_verb() -> None:
    shown = {c[0] for page in _pages() for lang, code, _ in _blocks(page) if lang == "bash" for c in _commands(code) if c}
    verbs = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001 - argparse keeps them there
    assert verbs <= shown, f"verbs without an example in the guide: {sorted(verbs - shown)}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("docs")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(data_dir)  # ../shared/data as the guide writes it, wherever the data is
    work = root / "work"
    (work / "examples").mkdir(parents=True)
    for config in (ROOT / "examples").glob("*.yaml"):
        shutil.copy(config, work / "examples" / config.name)
    return work


@pytest.mark.slow  # the whole guide: detect, batch, study, training runs
@needs("torch", "lightning", "dask", "distributed")  # the guide's commands use the `learn` and `scale` extras
@pytest.mark.parametrize("name", RUN_ORDER)
def test_worked_examples_run(name: str, sandbox: Path) -> None:
    blocks = [(lang, code) for lang, code, run in _blocks(GUIDE / name) if run]
    assert blocks, f"{name} has no block marked {MARK}"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    for lang, code in blocks:
        argv = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(argv, cwd=sandbox, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{name}: block failed:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
    if name == "commands.md":
        assert (sandbox / "out" / "joplin_irmad" / "changes.gpkg").is_file()
        assert (sandbox / "out" / "batch" / "batch.json").is_file()
        assert (sandbox / "out" / "runs" / "fc-siam-diff_small" / "model.safetensors").is_file()
        assert (sandbox / "out" / "joplin_irmad" / "report" / "report.html").is_file()
    if name == "studies.md":
        assert (sandbox / "examples" / "out" / "ign_landcover" / "study.json").is_file()
