"""``deltacd train``: train a change-detection network.

Train a network on a dataset folder from prepare-dataset and write OUT/model.safetensors, a self-describing
checkpoint for `deltacd detect --model`. CONFIG is a YAML file with the fields of deltacd.train.TrainConfig
(example: examples/train_small.yaml).

API: :func:`deltacd.train.train`.
"""

from __future__ import annotations

import argparse
import sys

from deltacd.cli.common import load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="training YAML file")
    p.add_argument("--overwrite", action="store_true", help="replace the run folder named in the config")


def run(args: argparse.Namespace) -> int:
    values = load_config(args.config)
    if values.get("task") in ("damage-classifier", "damage-segmentation", "building-localisation"):
        from deltacd.damage.train import train_damage

        damage = train_damage(args.config, overwrite=args.overwrite, progress=not args.quiet and sys.stderr.isatty())
        print(f"model in {damage.checkpoint} ({values['task']}); best validation score {damage.best_val:.3f}; "
              f"{damage.steps} steps in {damage.minutes:.1f} min")
        return 0
    from deltacd.train.fit import is_main_process, train

    result = train(args.config, overwrite=args.overwrite, progress=not args.quiet)
    if not is_main_process():
        return 0  # a DDP child process: rank 0 reports
    test = result.test_scores or {}
    print(f"model in {result.checkpoint} ({type(result.model).__name__}); best validation F1 {result.best_val_f1:.3f} at threshold "
          f"{result.threshold:.3f}; {result.epochs} epochs in {result.minutes:.1f} min")
    if test:
        print("test: " + ", ".join(f"{k} {v:.3f}" for k, v in test.items() if isinstance(v, float)))
    return 0
