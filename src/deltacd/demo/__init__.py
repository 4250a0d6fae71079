"""The bundled real example: a Pléiades PAN pair in sensor geometry (see README.md here for origin and licence)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).resolve().parent
BEFORE = DEMO_DIR / "pre_event_img1.tif"
AFTER = DEMO_DIR / "post_event_img1.tif"

#: Settings of the demo run; each is a DetectOptions field, written to run.json.
#: CVA rather than IR-MAD: with a single PAN band IR-MAD's chi-square statistic has one degree of
#: freedom and flags shadows and parallax as widely as real change (40 % of the scene here, 11 % with CVA).
DEMO_OPTIONS: dict[str, Any] = {"method": "cva", "coregistration": "correct", "harmonise": "pif", "morphology_radius_px": 1}


def run_demo(out_dir: str | Path = "deltacd-demo", *, overwrite: bool = False, progress=None):
    """Run :func:`deltacd.detect` on the bundled pair; returns its :class:`~deltacd.pipeline.DetectResult`."""
    from deltacd.pipeline import detect

    return detect(BEFORE, AFTER, out_dir, overwrite=overwrite, progress=progress, **DEMO_OPTIONS)
