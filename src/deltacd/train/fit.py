"""Run a training: config in, self-describing model file out (``deltacd train CONFIG.yaml``).

:func:`train` validates the configuration, seeds everything, trains a
:class:`~deltacd.train.module.ChangeDetectionTask` with the Lightning ``Trainer`` (GPU when
present, several GPUs with DDP when ``devices`` asks for them), keeps the epoch with the best
validation F1, chooses the decision threshold on validation, scores the test split at that
threshold, and writes the run folder::

    out/
      model.safetensors    weights + ModelSpec (architecture, bands, normalisation, threshold,
                           data and training summaries): all `deltacd detect --model` needs
      metrics.csv          per-step / per-epoch losses, scores, learning rate (Lightning CSVLogger)
      hparams.yaml         the task's hyper-parameters (CSVLogger)
      config_used.yaml     the resolved configuration (every field, defaults included)
      train_record.json    result, resolved values (pos_weight, model kwargs), versions, device

The folder is written under a temporary name next to ``out`` and renamed when complete; an
existing ``out`` is refused unless ``overwrite=True``, and then replaced only after success.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from deltacd.errors import InputError, OutputError
from deltacd.io.outputs import STAGING_TAG, OutputLock, check_output, input_paths, publish, remove_stale_staging
from deltacd.io.faults import input_states, machine_fault
from deltacd.io.records import write_json
from deltacd.train.adaptation import merge_lora
from deltacd.train.config import TrainConfig, load_train_config, read_manifest, resolve_adaptation
from deltacd.train.datamodule import ChangeDataModule
from deltacd.train.losses import pos_weight_from_balance
from deltacd.train.module import ChangeDetectionTask

if TYPE_CHECKING:
    from deltacd.datasets.manifest import DatasetManifest

log = logging.getLogger(__name__)

__all__ = ["MONITOR", "TrainResult", "is_main_process", "torch_settings", "train"]

#: Metric that selects the kept epoch and drives early stopping: validation F1 at the
#: validation-chosen threshold (the threshold the saved model will use).
MONITOR = "val_f1_best"

RECORD_FORMAT = "deltacd-train/1"


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    out_dir
        The run folder.
    checkpoint
        ``out_dir / "model.safetensors"``.
    best_val_f1
        Validation F1 of the kept epoch at ``threshold`` (NaN if validation has no change).
    threshold
        Change probability threshold chosen on validation (saved in the checkpoint).
    test_scores
        ``{"f1", "precision", "recall", "iou"}`` on the test split at ``threshold``; None without
        test chips.
    minutes
        Wall-clock duration of the run.
    epochs
        Epochs run (early stopping may end before ``config.epochs``).
    model
        The trained network (kept epoch, CPU, eval mode), as saved.
    """

    out_dir: Path
    checkpoint: Path
    best_val_f1: float
    threshold: float
    test_scores: dict[str, float] | None
    minutes: float
    epochs: int
    model: nn.Module = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.checkpoint),
            "best_val_f1": _finite_or_none(self.best_val_f1),
            "threshold": self.threshold,
            "test_scores": self.test_scores,
            "minutes": round(self.minutes, 3),
            "epochs": self.epochs,
        }


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def is_main_process() -> bool:
    """True except in the extra processes of a DDP run (ranks > 0), which must not write or print.

    Read from the environment because it is needed before the Trainer exists: Lightning's DDP
    launcher re-runs the whole command in child processes with these variables set.
    """
    return all(int(os.environ.get(k, "0")) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


@contextmanager
def torch_settings(num_threads: int | None, quiet: bool) -> Iterator[None]:
    """Thread count, matmul precision and Lightning's console chatter, restored afterwards (every training task)."""
    threads = torch.get_num_threads()
    matmul = torch.get_float32_matmul_precision()
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    if num_threads:
        torch.set_num_threads(num_threads)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 tensor cores: same accuracy class, ~2x faster
    if quiet:  # GPU available, seeds, ranks: notices, noise in a library call
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Lightning suggests more loader workers / a larger logging interval on small data; the
            # settings are the user's choice, the advice is noise in a library call.
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            # raised inside Lightning with torch >= 2.10; nothing the caller can act on
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
            # frozen encoder parts are in eval mode on purpose (adaptation modes): Lightning's notice is noise
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
            # the staging folder holds deltacd's staging tag; the CSV logger only writes metrics.csv beside it
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty.*")
            yield
    finally:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(matmul)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _make_trainer(config: TrainConfig, run_dir: Path, *, progress: bool, train_batches: int) -> tuple[L.Trainer, ModelCheckpoint]:
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=MONITOR, mode="max", save_top_k=1, save_weights_only=True
    )
    callbacks: list[L.Callback] = [checkpoint, LearningRateMonitor(logging_interval=config.optimizer.interval)]
    if config.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=config.early_stopping_patience))
    try:
        trainer = L.Trainer(
            max_epochs=config.epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            num_nodes=config.num_nodes,
            strategy=config.strategy,
            precision=config.precision,
            callbacks=callbacks,
            logger=CSVLogger(run_dir, name="", version=""),
            default_root_dir=run_dir,
            log_every_n_steps=max(1, min(50, train_batches)),
            enable_progress_bar=progress,
            enable_model_summary=progress,
        )
    except (MisconfigurationException, ValueError, RuntimeError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:240]
        raise InputError(
            f"accelerator={config.accelerator!r}, devices={config.devices!r}, strategy={config.strategy!r}, "
            f"precision={config.precision!r}: {detail}; "
            "change these settings (accelerator: auto uses a GPU only when one is present)"
        ) from exc
    return trainer, checkpoint


def _prefixed(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{"val_f1": x, ...}`` -> ``{"f1": x, ...}`` for the scores and the loss of one stage."""
    names = ("f1", "precision", "recall", "iou", "loss")
    return {name: float(metrics[prefix + name]) for name in names if prefix + name in metrics}


def train(config: TrainConfig | dict[str, Any] | str | Path, *, overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train a change-detection model and save it as a self-describing checkpoint.

    Parameters
    ----------
    config
        A :class:`~deltacd.train.config.TrainConfig`, its values as a dict, or a YAML file.
    overwrite
        Replace an existing ``config.out`` (only once the new run has succeeded).
    progress
        Show Lightning's progress bar and model summary; False keeps the console quiet.

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError, MissingInputError
        Bad configuration, dataset or ``init_from`` (nothing written).
    OutputError
        ``config.out`` exists and ``overwrite`` is False.
    KeyboardInterrupt
        Interrupted; the partial run folder is removed.
    """
    cfg = load_train_config(config)
    out = Path(cfg.out)
    inputs = input_paths(cfg.dataset, cfg.init_from)
    if is_main_process():
        check_output(out, overwrite=overwrite, inputs=inputs)
    manifest = read_manifest(cfg.dataset)
    bands = list(manifest.bands)
    mean, std = manifest.normalisation(bands)
    pos_weight = (
        pos_weight_from_balance(manifest.class_balance, source=f"{cfg.dataset / 'manifest.json'} (loss.pos_weight: auto)")
        if cfg.loss.pos_weight == "auto"
        else float(cfg.loss.pos_weight)
    )

    # A fixed staging name, because DDP's child processes re-run this function and must find it;
    # only the first process creates, publishes or removes it, holding the output's lock.
    run_dir = out.parent / f".{out.name}.train.partial"
    global_zero = is_main_process()
    lock = None
    if global_zero:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            lock = OutputLock(out).acquire()
            remove_stale_staging(out)
            run_dir.mkdir()
            (run_dir / STAGING_TAG).write_text(f"pid {os.getpid()}\n")
        except FileExistsError:
            lock.release()
            raise OutputError(f"{run_dir}: exists and was not made by this version of deltacd; remove it or choose another out") from None
        except OSError as exc:
            if lock is not None:
                lock.release()
            raise OutputError(f"out: cannot create {run_dir} ({exc.strerror}); choose a writable folder") from exc
    states = input_states(inputs)
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        with torch_settings(cfg.num_threads, quiet=not progress):
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            data = ChangeDataModule(
                cfg.dataset,
                batch_size=cfg.batch_size,
                num_workers=cfg.num_workers,
                seed=cfg.seed,
                max_train_chips=cfg.max_train_chips,
                crop_size=cfg.crop_size,
                balance_sources=cfg.balance_sources,
                source_shares=cfg.source_shares,
            )
            data.setup("fit")
            sizes = data.sizes()
            task = ChangeDetectionTask(
                model=cfg.model.name,
                model_kwargs=cfg.model.kwargs,
                bands=bands,
                mean=mean,
                std=std,
                loss=cfg.loss.kind,
                pos_weight=pos_weight,
                dice_weight=cfg.loss.dice_weight,
                gamma=cfg.loss.gamma,
                lr=cfg.optimizer.lr,
                weight_decay=cfg.optimizer.weight_decay,
                warmup_epochs=cfg.optimizer.warmup_epochs,
                min_lr_ratio=cfg.optimizer.min_lr_ratio,
                lr_interval=cfg.optimizer.interval,
                init_from=cfg.init_from,
                adaptation=asdict(resolve_adaptation(cfg)),
                normalisation=cfg.normalisation,
                augment=cfg.augment,
                ignore_index=manifest.ignore_index,
                val_sources=data.sources("val") if cfg.validation == "per_source" else (),
            )
            if cfg.normalisation == "encoder":
                _warn_if_far(mean, std, task, bands)
                mean, std = task.normalisation_dn()
            trainer, checkpoint = _make_trainer(
                cfg, run_dir, progress=progress, train_batches=math.ceil(sizes["train"] / cfg.batch_size)
            )
            try:
                trainer.fit(task, datamodule=data)
            except SystemExit:
                # Lightning turns Ctrl+C into sys.exit(1) after ignoring SIGINT; give it back
                # and report an interruption, which callers (the CLI) handle.
                if trainer.interrupted:
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    raise KeyboardInterrupt from None
                raise
            epochs_run = int(trainer.current_epoch)
            best = checkpoint.best_model_path or None
            if best is None:
                log.warning("no checkpoint was kept (validation never ran); saving the last weights")
            val = trainer.validate(task, datamodule=data, ckpt_path=best, verbose=False)[0]
            threshold = round(float(task.threshold), 6)  # a histogram edge, k / 1000, without float32 noise
            best_val_f1 = float(task.val_f1_best)
            test_scores = None
            if sizes["test"] > 0:
                test_scores = _prefixed(trainer.test(task, datamodule=data, ckpt_path=best, verbose=False)[0], "test_")
            if not trainer.is_global_zero:
                return TrainResult(out, out / "model.safetensors", best_val_f1, threshold, test_scores, 0.0, epochs_run, task.model)
        minutes = (time.perf_counter() - started) / 60.0
        model = task.model.cpu().eval()
        # LoRA adapters folded into the weights: the saved model is a plain registry network
        merged = merge_lora(model)
        summary = _summaries(
            cfg, manifest, sizes, pos_weight, task, val, best_val_f1, threshold, test_scores, epochs_run, minutes, trainer
        )
        summary["training"]["adaptation"] = {
            **(task.adaptation_report.to_dict() if task.adaptation_report else {}),
            "lora_layers_merged": merged,
            "saved_parameters": sum(p.numel() for p in model.parameters()),
        }
        _write_outputs(run_dir, cfg, model, task, bands, mean, std, threshold, summary, started_at, manifest.resolution_m)
        if global_zero:
            publish(run_dir, out, overwrite=overwrite, kind="train", inputs=inputs)
    except BaseException as exc:
        if global_zero:
            shutil.rmtree(run_dir, ignore_errors=True)
        fault = machine_fault(exc, folder=out.parent, out_dir=out, inputs=states,
                              memory_hint="batch_size (now {}) or crop_size in the training file".format(cfg.batch_size))
        if fault is not None:  # a full disk while saving a checkpoint, no memory...: one line, nothing half-written
            raise fault from exc
        raise
    finally:
        if lock is not None:
            lock.release()
    log.info("trained %s: val F1 %.3f at threshold %.3f, %d epochs, %.1f min -> %s",
             cfg.model.name, best_val_f1, threshold, epochs_run, minutes, out)
    return TrainResult(
        out_dir=out,
        checkpoint=out / "model.safetensors",
        best_val_f1=best_val_f1,
        threshold=threshold,
        test_scores=test_scores,
        minutes=minutes,
        epochs=epochs_run,
        model=model,
    )


def _summaries(
    cfg: TrainConfig,
    manifest: DatasetManifest,
    sizes: dict[str, int],
    pos_weight: float,
    task: ChangeDetectionTask,
    val: dict[str, Any],
    best_val_f1: float,
    threshold: float,
    test_scores: dict[str, float] | None,
    epochs_run: int,
    minutes: float,
    trainer: L.Trainer,
) -> dict[str, dict[str, Any]]:
    """The ``data`` and ``training`` summaries of the ModelSpec (plain JSON values)."""
    from deltacd._version import __version__

    data = {
        "dataset": str(Path(cfg.dataset).resolve()),
        "chips": sizes,
        "chips_in_dataset": manifest.splits,
        "chip_size": manifest.chip_size,
        "dtype": manifest.dtype,
        "class_balance": manifest.class_balance,
        "ignore_index": manifest.ignore_index,
        "max_train_chips": cfg.max_train_chips,
        "sources": [{k: s.get(k) for k in ("kind", "name", "n_chips")} for s in manifest.sources if isinstance(s, dict)],
        "created_utc": manifest.created_utc,
    }
    training = {
        "epochs_run": epochs_run,
        "max_epochs": cfg.epochs,
        "best_val_f1": _finite_or_none(best_val_f1),
        "val_threshold": threshold,
        "validation": cfg.validation,
        "val_f1_per_source": dict(task.val_f1_per_source),
        "val_at_0.5": _prefixed(val, "val_"),
        "test": test_scores,
        "minutes": round(minutes, 3),
        "seed": cfg.seed,
        "loss": {"kind": cfg.loss.kind, "pos_weight": pos_weight, "dice_weight": cfg.loss.dice_weight, "gamma": cfg.loss.gamma},
        "optimizer": {"name": "AdamW", **cfg.to_dict()["optimizer"]},
        "batch_size": cfg.batch_size,
        "init_from": cfg.init_from,
        "freeze_encoder": cfg.freeze_encoder,
        "normalisation": cfg.normalisation,
        "encoder": _encoder_summary(task),
        "augment": cfg.augment,
        "precision": cfg.precision,
        "device": f"{trainer.accelerator.__class__.__name__.replace('Accelerator', '').lower()} x{trainer.num_devices}",
        "deltacd_version": __version__,
        "torch_version": torch.__version__,
        "lightning_version": L.__version__,
    }
    return {"data": data, "training": training}


def _write_outputs(
    run_dir: Path,
    cfg: TrainConfig,
    model: nn.Module,
    task: ChangeDetectionTask,
    bands: list[str],
    mean: list[float],
    std: list[float],
    threshold: float,
    summary: dict[str, dict[str, Any]],
    started_at: str,
    manifest_resolution: float | None,
) -> None:
    from deltacd.models.checkpoint import ModelSpec, offline_kwargs, save_checkpoint

    spec = ModelSpec(
        name=cfg.model.name,
        # pretrained weights are in the checkpoint: rebuilding must not need their file
        kwargs=offline_kwargs(task.model_kwargs),
        bands=tuple(bands),
        mean=tuple(mean),
        std=tuple(std),
        threshold=threshold,
        task="binary",
        gsd_m=manifest_resolution,
        data=summary["data"],
        training=summary["training"],
    )
    save_checkpoint(run_dir / "model.safetensors", model, spec)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # Lightning's pickled copy; model.safetensors replaces it
    (run_dir / "config_used.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    record = {
        "format": RECORD_FORMAT,
        "started": started_at,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                 "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "config": cfg.to_dict(),
        "resolved": {"model_kwargs": dict(task.model_kwargs), "pos_weight": summary["training"]["loss"]["pos_weight"],
                     "bands": bands, "mean": mean, "std": std},
        **summary,
        "outputs": {"model": "model.safetensors", "metrics": "metrics.csv", "config": "config_used.yaml"},
    }
    write_json(run_dir / "train_record.json", record)


def _encoder_summary(task: ChangeDetectionTask) -> dict[str, Any] | None:
    """The registry encoder's description (spec, weights used, normalisation), when the model has one."""
    describe = getattr(getattr(task.model, "encoder", None), "describe", None)
    return describe() if callable(describe) else None


def _warn_if_far(mean: list[float], std: list[float], task: ChangeDetectionTask, bands: list[str]) -> None:
    """Warn when the dataset's band means are > 3 encoder std away from the encoder's: other units (12-bit DN)."""
    enc_mean, enc_std = task.normalisation_dn()
    z = [(m - em) / es for m, em, es in zip(mean, enc_mean, enc_std, strict=True)]
    far = [f"{b} {v:+.1f}" for b, v in zip(bands, z, strict=True) if abs(v) > 3]
    if far:
        warnings.warn(
            f"normalisation: 'encoder': the dataset's band means lie far from what the encoder expects "
            f"(in encoder standard deviations: {', '.join(far)}); the data are probably in other units "
            "(e.g. 12-bit DN vs 8-bit); use normalisation: dataset or convert the data",
            stacklevel=3,
        )
