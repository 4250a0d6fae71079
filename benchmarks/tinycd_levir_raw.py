"""TinyCD with the authors' LEVIR-CD weights on the 7 LEVIR-CD test crops: per-crop counts and micro F1.

Reproduces the authors' evaluation (``test_ondata.py`` of AndreaCodegoni/Tiny_model_4_CD): A is
the reference (before) image, B the test (after) image, 8-bit RGB divided by 255 and ImageNet
normalised, change probability thresholded at 0.5, any non-zero label pixel is change. Their code
gives micro F1 0.937 on these 7 crops.

Usage::

    python benchmarks/tinycd_levir_raw.py [--data DIR] [--checkpoint FILE]

Defaults point at ``../shared/data`` next to the repository. Runs in a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deltacd.models.tinycd import load_tinycd_checkpoint, normalise_rgb8

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFERENCE_F1 = 0.937  # the authors' code on the same 7 crops


def read_rgb(path: Path) -> np.ndarray:
    """8-bit RGB PNG -> uint8 ``[3, H, W]``."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def read_label(path: Path) -> np.ndarray:
    """Label PNG (0 / 255) -> bool ``[H, W]``; any non-zero value is change, as in the authors' loader."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def evaluate(data: Path, checkpoint: Path) -> tuple[list[tuple[str, int, int, int]], dict[str, float]]:
    """Per-crop (name, TP, FP, FN) and micro precision / recall / F1 over ``data/label/test_*.png``."""
    model = load_tinycd_checkpoint(checkpoint)
    rows: list[tuple[str, int, int, int]] = []
    names = sorted(p.name for p in (data / "label").glob("test_*.png"))
    if not names:
        raise SystemExit(f"no test_*.png under {data / 'label'}")
    with torch.inference_mode():
        for name in names:
            before = normalise_rgb8(read_rgb(data / "A" / name)).unsqueeze(0)
            after = normalise_rgb8(read_rgb(data / "B" / name)).unsqueeze(0)
            prob = torch.sigmoid(model(before, after))[0, 0].numpy()
            pred = prob > 0.5
            truth = read_label(data / "label" / name)
            rows.append((name, int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())))
    tp, fp, fn = (sum(r[i] for r in rows) for i in (1, 2, 3))
    scores = {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
    }
    return rows, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "levircd_bitcd", help="folder with A/, B/, label/")
    parser.add_argument(
        "--checkpoint", type=Path, default=SHARED / "checkpoints_tinycd" / "levir_best.pth", help="TinyCD .pth"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows, s = evaluate(args.data, args.checkpoint)
    print(f"checkpoint: {args.checkpoint}")
    print(f"{'crop':<26}{'TP':>8}{'FP':>8}{'FN':>8}")
    for name, tp, fp, fn in rows:
        print(f"{name:<26}{tp:>8}{fp:>8}{fn:>8}")
    tp, fp, fn = (sum(r[i] for r in rows) for i in (1, 2, 3))
    print(f"{'total':<26}{tp:>8}{fp:>8}{fn:>8}")
    print(f"micro precision {s['precision']:.4f}  recall {s['recall']:.4f}  F1 {s['f1']:.4f}")
    print(f"authors' code: F1 {REFERENCE_F1:.3f}; difference {s['f1'] - REFERENCE_F1:+.4f}")
    return 0 if abs(s["f1"] - REFERENCE_F1) <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
