"""Size and CPU speed of SiameseUNet with each available encoder spec (4-band pairs, 256 x 256).

For each spec: encoder parameters, full SiameseUNet parameters (``in_channels=4``,
``num_classes=1``, ``fusion="diff"``, default decoder), and the megapixels per second of
``model(before, after)`` on a batch of 4 pairs of 4 x 256 x 256 under ``torch.no_grad()`` in eval
mode: 2 intra-op threads, 2 warm-up passes, median of 5 timed passes. Megapixels counts the
output pixels (4 x 256 x 256 = 0.262 MP per pass), each from two dates.

TinyCD is not a U-Net encoder (its EfficientNet-B4 stages stop at stride 8 and feed its own
mixing decoder); its whole model is timed the same way as a reference line.

Accuracy is not measured here (it comes from the training benchmark).

    python benchmarks/encoders.py
    python benchmarks/encoders.py --specs timm:resnet18 efficientnet_lite0:imagenet --repeats 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from deltacd.models.encoders import build_encoder
from deltacd.models.registry import count_parameters
from deltacd.models.siamese_unet import SiameseUNet

#: (spec, weights, bands): what runs here without downloads.
DEFAULT_SPECS: list[tuple[str, str | None]] = [
    ("efficientnet_lite0:imagenet", None),  # ImageNet weights from the installed package
    ("timm:resnet18", "random"),
    ("timm:mobilenetv3_small_100", "random"),
    ("timm:vit_tiny_patch16_224", "random"),
]
BANDS = ["B", "G", "R", "N"]


def time_forward(model: nn.Module, batch: int, side: int, *, warmup: int, repeats: int) -> float:
    """Median seconds of ``model(before, after)`` on random [batch, 4, side, side] pairs."""
    before, after = torch.randn(batch, 4, side, side), torch.randn(batch, 4, side, side)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(before, after)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--specs", nargs="*", help="encoder specs (weights: the spec's default for named specs, random for timm)"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-tinycd", action="store_true", help="skip the TinyCD reference line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    specs = (
        [(s, None if ":" in s and not s.startswith("timm:") else "random") for s in args.specs]
        if args.specs
        else DEFAULT_SPECS
    )

    megapixels = args.batch * args.side * args.side / 1e6
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads; "
        f"batch {args.batch} x 4 x {args.side} x {args.side} pairs, warm-up {args.warmup}, median of {args.repeats}"
    )
    header = (
        f"{'encoder spec':<32} {'weights':<10} {'encoder params':>15} {'SiameseUNet params':>19} "
        f"{'s/batch':>8} {'MP/s':>7}"
    )
    print(header)
    print("-" * len(header))
    for spec, weights in specs:
        encoder = build_encoder(spec, in_channels=4, weights=weights, bands=BANDS)
        model = SiameseUNet(in_channels=4, num_classes=1, encoder=encoder).eval()
        seconds = time_forward(model, args.batch, args.side, warmup=args.warmup, repeats=args.repeats)
        source = "random" if encoder.weights == "random" else "pretrained"
        print(
            f"{spec:<32} {source:<10} {count_parameters(encoder):>15,} {count_parameters(model):>19,} "
            f"{seconds:>8.3f} {megapixels / seconds:>7.2f}"
        )
    if not args.no_tinycd:
        from deltacd.models.tinycd import TinyCD

        model = TinyCD(in_channels=4).eval()
        seconds = time_forward(model, args.batch, args.side, warmup=args.warmup, repeats=args.repeats)
        print(
            f"{'(tinycd, whole model)':<32} {'random':<10} {count_parameters(model._backbone):>15,} "
            f"{count_parameters(model):>19,} {seconds:>8.3f} {megapixels / seconds:>7.2f}"
        )


if __name__ == "__main__":
    main()
