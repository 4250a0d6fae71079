"""The peer a user would pick instead: torchgeo's ``ChangeDetectionTask``, trained on the very same chips.

``python benchmarks/few_label.py CONFIG -o OUT`` with ``torchgeo`` arms is the few-label protocol of
:mod:`fewlabel.protocol` (same chip draws, same number of optimisation steps of the
same batch size, same seeds, same thread count, same test crops scored with the same micro
F1) with arms of kind ``torchgeo`` beside deltacd's. A ``torchgeo`` arm trains
``torchgeo.trainers.ChangeDetectionTask`` (torchgeo >= 0.8, Stewart et al. 2022,
arXiv:2111.08872) with ``model`` ``fcsiamdiff``, ``fcsiamconc`` (segmentation-models-pytorch
UNets over a timm / smp encoder, siamese) or ``unet`` (the two dates stacked), its
``backbone`` (default ``resnet18``), loss ``bce``, AdamW at the benchmark's ``lr`` with its own
ReduceLROnPlateau; the inputs normalised with the dataset's per-band mean and std (what a
torchgeo datamodule does), no augmentation (torchgeo's trainers add none). Its decision rule
is torchgeo's: probability > 0.5. ``weights: true`` (ImageNet encoder) needs torchgeo / smp to
download the weights, which this machine cannot: the arms here start from random weights, and
the table says so.

torchgeo is imported only here, and only when a ``torchgeo`` arm runs: it is a requirement of the
benchmarks (``benchmarks/requirements.txt``), not of the package.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deltacd.errors import InputError, MissingInputError

log = logging.getLogger(__name__)

__all__ = ["PEER_MODELS", "train_torchgeo"]

#: torchgeo ``ChangeDetectionTask`` models a ``torchgeo`` arm may name.
PEER_MODELS = ("fcsiamdiff", "fcsiamconc", "unet")


def _collate(mean: np.ndarray, std: np.ndarray, ignore_index: int) -> Callable[[list[dict]], dict]:
    import torch

    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def collate(items: list[dict]) -> dict:
        before = (torch.stack([i["before"] for i in items]) - m) / s
        after = (torch.stack([i["after"] for i in items]) - m) / s
        label = torch.stack([i["label"] for i in items])
        # torchgeo's BCE has no ignore index: unlabelled pixels count as unchanged
        mask = torch.where(label == ignore_index, 0, label).unsqueeze(1).float()
        return {"image": torch.stack([before, after], dim=1), "mask": mask}

    return collate


def train_torchgeo(
    view: Path, *, model: dict[str, Any], epochs: int, batch_size: int, lr: float, seed: int,
    threads: int | None, device: str, bands: Sequence[str],
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], float, float]:
    """Train a torchgeo ``ChangeDetectionTask`` on a few-label view folder.

    Parameters
    ----------
    view
        Dataset folder (train split cycled to the step budget, val split), as built by
        :func:`fewlabel.protocol.build_view`.
    model
        ``{"name": "fcsiamdiff" | "fcsiamconc" | "unet", "kwargs": {"backbone": "resnet18", ...}}``;
        other kwargs go to ``ChangeDetectionTask``.
    epochs, batch_size, lr, seed, threads, device
        The benchmark's budget, identical to the deltacd arms'.
    bands
        Band order of the arrays the returned ``predict`` will get.

    Returns
    -------
    predict, threshold, train_s
        ``predict(before, after)``: raw-DN float32 ``[B, C, H, W]`` arrays -> change probability
        ``[B, H, W]``; the threshold 0.5 (torchgeo's); the training wall time in seconds.
    """
    try:
        import lightning as L
        import torch
        from torch.utils.data import DataLoader
        from torchgeo.trainers import ChangeDetectionTask
    except ImportError as exc:
        raise MissingInputError(f"torchgeo arm: {exc.name} is not installed; pip install -r benchmarks/requirements.txt (torchgeo)") from None

    from deltacd.datasets.manifest import load_manifest
    from deltacd.datasets.torch_dataset import ChangeChipDataset

    name = model.get("name")
    if name not in PEER_MODELS:
        raise InputError(f"torchgeo arm: model {name!r}; use one of {', '.join(PEER_MODELS)}")
    kwargs = {"backbone": "resnet18", "weights": None, **dict(model.get("kwargs") or {})}
    manifest = load_manifest(view)
    if tuple(bands) != tuple(manifest.bands):
        raise InputError(f"torchgeo arm: arrays in bands {','.join(bands)}, dataset {','.join(manifest.bands)}")
    mean, std = (np.asarray(v, dtype=np.float32) for v in manifest.normalisation(list(bands)))
    collate = _collate(mean, std, manifest.ignore_index)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        L.seed_everything(seed, workers=True, verbose=False)
        task = ChangeDetectionTask(model=name, in_channels=len(bands), task="binary", loss="bce", lr=lr, **kwargs)
        train = DataLoader(ChangeChipDataset(view, "train"), batch_size=batch_size, shuffle=True, collate_fn=collate,
                           generator=torch.Generator().manual_seed(seed))
        val = DataLoader(ChangeChipDataset(view, "val"), batch_size=batch_size, collate_fn=collate)
        accelerator = "gpu" if device in ("cuda", "gpu") else ("auto" if device == "auto" else "cpu")
        trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            log_every_n_steps=max(1, len(train)))
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on loader workers: tiny data on purpose
            trainer.fit(task, train_dataloaders=train, val_dataloaders=val)
        train_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    net = task.model.eval()
    run_device = next(net.parameters()).device
    siamese = name.startswith("fcsiam")
    collate_mean = torch.as_tensor(mean).view(1, -1, 1, 1)
    collate_std = torch.as_tensor(std).view(1, -1, 1, 1)

    def predict(before: np.ndarray, after: np.ndarray) -> np.ndarray:
        b = (torch.from_numpy(np.asarray(before, dtype=np.float32)) - collate_mean) / collate_std
        a = (torch.from_numpy(np.asarray(after, dtype=np.float32)) - collate_mean) / collate_std
        x = torch.stack([b, a], dim=1)
        if not siamese:
            x = x.flatten(1, 2)
        with torch.inference_mode():
            return torch.sigmoid(net(x.to(run_device)))[:, 0].float().cpu().numpy()

    return predict, 0.5, train_s
