"""Wall time of each example study, and the share of each step; screenshots of a report and a web map.

The example data is prepared from ../shared/data (``deltacd prepare-examples``), then each of
``examples/coast_landcover_oscd.yaml``, ``ign_landcover.yaml`` and ``hurricane_damage.yaml``
runs from scratch in a temporary folder (``deltacd.study.run_study``), then a second time (every
step up to date). With ``--screenshots DIR`` the coastal study's report and the hurricane study's
web map are photographed in headless Chromium (Playwright) into DIR.

Usage::

    python benchmarks/studies.py [--data DIR] [--out benchmarks/results/studies.md] [--screenshots docs/figures]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import deltacd
from deltacd.study.examples import prepare_examples
from deltacd.study.run import run_study

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
STUDIES = ("coast_landcover_oscd.yaml", "ign_landcover.yaml", "hurricane_damage.yaml")


def screenshot(page_path: Path, out: Path, *, full_page: bool, click: str | None = None) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(page_path.as_uri())
        page.wait_for_timeout(1500)
        if click:
            page.locator(click).nth(20).click(force=True)
            page.wait_for_timeout(400)
        page.screenshot(path=str(out), full_page=full_page)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "studies.md")
    parser.add_argument("--screenshots", type=Path)
    args = parser.parse_args()
    lines = [f"Example studies from scratch ({platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
             f"deltacd {deltacd.__version__})", "",
             "| study | total (s) | steps: seconds (share) | rerun (s) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        prepare_examples(args.data, root / "data")
        prepared = time.perf_counter() - started
        for name in STUDIES:
            text = (ROOT / "examples" / name).read_text().replace("../../shared/data", str(args.data))
            (root / name).write_text(text)
            begun = time.perf_counter()
            result = run_study(root / name)
            total = time.perf_counter() - begun
            again = time.perf_counter()
            rerun = run_study(root / name)
            rerun_s = time.perf_counter() - again
            assert all(s.status.startswith("skipped") for s in rerun.steps)
            steps = ", ".join(f"{s.name} {s.seconds:.1f} ({s.seconds / total:.0%})" for s in result.steps)
            lines.append(f"| {name} | {total:.1f} | {steps} | {rerun_s:.1f} |")
        lines += ["", f"Preparing the example data (`deltacd prepare-examples`): {prepared:.1f} s."]
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            screenshot(root / "out" / "coast_landcover_oscd" / "report" / "report.html", args.screenshots / "report_coast.png",
                       full_page=False)
            screenshot(root / "out" / "hurricane_damage" / "report" / "webmap" / "index.html",
                       args.screenshots / "webmap_hurricane.png", full_page=False, click=".leaflet-overlay-pane path")
            lines.append(f"Screenshots: {args.screenshots / 'report_coast.png'}, {args.screenshots / 'webmap_hurricane.png'}.")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
