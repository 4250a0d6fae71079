"""A trained change-detection network behind the :class:`ChangeMethod` contract, run by the one tiled engine.

:class:`LearnedModel` wraps any network that follows the model contract of
:mod:`deltacd.models.registry` (``forward(before, after)`` on normalised float32 ``[B, C, H, W]``
-> logits ``[B, K, H, W]``) together with its :class:`~deltacd.models.checkpoint.ModelSpec`
(band names, normalisation in raw digital numbers, decision threshold). The engine hands it
windows of both dates in raw DN, in the pair's band order; the wrapper picks the model's bands by
name, normalises them with the model's own statistics, runs the network and returns the change
probability. Nothing about the model is guessed from the images.

Where a model comes from (:meth:`LearnedModel.from_file`)
--------------------------------------------------------
* ``PATH.safetensors``: a deltacd checkpoint (:func:`~deltacd.models.checkpoint.load_checkpoint`);
  it describes itself, so ``detect --model PATH`` needs no other flag.
* ``ARCH:PATH``: a checkpoint written by other code, whose architecture is named because the
  file cannot say it. Supported: ``tinycd:PATH``, the raw state dict of Codegoni et al.'s TinyCD
  (arXiv:2207.13159; ``levir_best.pth``, ``whu_best.pth``) with the authors' normalisation
  (8-bit R,G,B, ImageNet mean/std) and their 0.5 threshold.

Score
-----
float32 ``[B, H, W]`` in [0, 1]: ``sigmoid(logit)`` for a binary model, ``1 - P(no change)``
(softmax) for a multi-class one. The automatic threshold is the one stored with the model
(chosen on validation), not a rule on the scene's histogram.

Cost and known failure modes
----------------------------
One forward pass per tile (four with ``tta=True``); on a GPU the pass runs under float16
autocast. The network sees ``context`` = 32 pixels beyond each tile's owned area (the engine's
default overlap is 64) and tiles are blended, but models with instance or batch-statistics
normalisation still depend slightly on the tile size. A model trained on raw 8-bit pairs sees
different inputs when date 2 is radiometrically harmonised (``harmonise="pif"``); see
``benchmarks/levir_tinycd_pipeline.py`` for the measured effect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deltacd.errors import InputError, ResourceError
from deltacd.io.bands import SENTINEL2_EQUIVALENT, canonical
from deltacd.methods.base import ChangeMethod
from deltacd.models.checkpoint import ModelSpec, load_checkpoint
from deltacd.postprocess.histogram import Histogram
from deltacd.prepare.sampling import PixelSample

log = logging.getLogger(__name__)

__all__ = ["FOREIGN_CHECKPOINTS", "LearnedModel", "onnx_cache_dir"]

_ONNX_OPSET = 17


def onnx_cache_dir() -> Path | None:
    """Folder of the ONNX graphs exported by earlier runs: ``$DELTACD_CACHE_DIR/onnx``, else
    ``$XDG_CACHE_HOME/deltacd/onnx``, else ``~/.cache/deltacd/onnx``; None (no cache) when
    ``DELTACD_CACHE_DIR`` is set empty.

    Why a cache: the export is most of a small run's fixed cost (TinyCD: 1.0 s of a 12.9 s run
    on a 2 048 px pair). Files are named by a hash of the weights and settings, so a changed
    model is exported anew; nothing in the folder is ever deleted by deltacd.
    """
    root = os.environ.get("DELTACD_CACHE_DIR")
    if root is not None:
        return Path(root).expanduser() / "onnx" if root else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "deltacd" / "onnx"

#: Loader of a checkpoint made by other code: ``(path, map_location) -> (model in eval mode, spec)``.
ForeignLoader = Callable[[Path, str], tuple[nn.Module, ModelSpec]]


def _load_tinycd(path: Path, map_location: str) -> tuple[nn.Module, ModelSpec]:
    """The authors' TinyCD state dict, with the normalisation and threshold of their evaluation."""
    from deltacd.models.tinycd import TINYCD_IMAGENET_NORMALISATION, load_tinycd_checkpoint

    model = load_tinycd_checkpoint(path, map_location=map_location)
    norm = TINYCD_IMAGENET_NORMALISATION
    if model.in_channels != len(norm["bands"]):
        raise InputError(
            f"{path}: TinyCD state dict with {model.in_channels} band(s); a raw state dict says nothing about its bands "
            "or normalisation, so only the authors' 3-band RGB weights load as tinycd:PATH; save other TinyCD models "
            "with deltacd.models.checkpoint.save_checkpoint and pass the .safetensors file"
        )
    scale = float(norm["scale"])
    # The authors divide 8-bit DN by 255 then apply ImageNet mean/std: (dn/255 - m)/s = (dn - 255 m)/(255 s).
    spec = ModelSpec(
        name="tinycd",
        kwargs={"in_channels": model.in_channels},
        bands=tuple(norm["bands"]),
        mean=tuple(scale * m for m in norm["mean"]),
        std=tuple(scale * s for s in norm["std"]),
        threshold=0.5,
        task="binary",
        gsd_m=_tinycd_gsd(path),
        data={"weights": "authors' checkpoint (AndreaCodegoni/Tiny_model_4_CD), 8-bit RGB, non-commercial research use"},
    )
    return model, spec


#: Ground sampling distance of the data sets the TinyCD authors trained on: LEVIR-CD 0.5 m
#: (Chen & Shi 2020), WHU-CD 0.3 m (the 0.075 m aerial images resampled, Ji et al. 2019).
TINYCD_GSD_M = {"levir": 0.5, "whu": 0.3}


def _tinycd_gsd(path: Path) -> float | None:
    """The training resolution of the authors' checkpoint, from its file name (``levir_best.pth``)."""
    name = path.name.lower()
    found = [gsd for key, gsd in TINYCD_GSD_M.items() if key in name]
    return found[0] if len(found) == 1 else None


#: Architectures accepted as ``ARCH:PATH`` for checkpoints made by other code.
FOREIGN_CHECKPOINTS: dict[str, ForeignLoader] = {"tinycd": _load_tinycd}

# An architecture prefix is a name of 2+ characters, so a Windows drive ("C:\...") is not one.
_ARCH_PREFIX = re.compile(r"^(?P<arch>[A-Za-z][A-Za-z0-9_.-]+):(?P<path>.+)$")

_TASKS = ("binary", "multiclass")


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device: {device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        # an explicit request that cannot be honoured stops; falling back belongs to "auto" (which says what it chose)
        raise ResourceError(f"device: {device!r} asked for but no CUDA GPU is visible to torch; use --device auto "
                            "(the GPU when there is one, else the CPU) or --device cpu")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ResourceError(f"device: {device!r} asked for but torch sees {torch.cuda.device_count()} GPU(s); "
                            "use --device cuda:0 .. or --device auto")
    return resolved


class LearnedModel(ChangeMethod):
    """A trained network as a change method: raw DN of both dates in, change probability out.

    Parameters
    ----------
    model
        Network following the registry contract; put in eval mode and moved to ``device``.
    spec
        Its bands, normalisation (raw DN), threshold and task.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
    tta
        Flip test-time augmentation: average the probability over the identity, horizontal,
        vertical and both flips (each input flipped, each output flipped back). Four times the
        compute; smooths orientation-dependent errors.
    amp
        float16 autocast on CUDA (ignored on CPU, where autocast would be slower).
    runtime
        ``"auto"`` (default): ONNX Runtime on the CPU when it is installed (the network exported
        once per run, measured 3.2x faster than torch for TinyCD on 4 x 512 px tiles, logits within
        1e-2), torch otherwise and on a GPU; ``"torch"``; ``"onnx"``.
    precision
        Autocast precision on CUDA: ``"fp16"`` (default), ``"bf16"`` or ``"fp32"`` (none).
    uncertainty
        Also return the predictive entropy (bits) of the mean probability over the flip views
        (implies ``tta``): ``predict`` then gives [B, 2, H, W], probability and entropy, and
        detect writes ``change_uncertainty.tif``. High where the views disagree or the mean
        probability is near 0.5: where the map is unsure.
    source
        Where the model came from (file name), for messages and run.json.

    Notes
    -----
    ``default_harmonise`` is the harmonisation of date 2 the model expects (``spec.training["harmonise"]``,
    ``"none"`` when absent, i.e. trained on raw pairs), for :func:`deltacd.detect` to use when the
    user does not choose one.

    Band order: the engine passes arrays in the pair's band order. :meth:`fit` (called by
    :func:`deltacd.detect` with the scene's pixel sample, whose ``bands`` are the pair's) or
    :meth:`select_bands` records which of them the model takes, by name. Without either,
    :meth:`predict` expects arrays already in the model's band order.
    """

    name = "model"
    context = 32
    tile_size = 1024  # larger tiles waste less of the network's work on the overlap
    score_units = "change probability"
    score_range = (0.0, 1.0)
    threshold_rule = "stored with the model (chosen on validation)"
    # activations of the network on both dates: TinyCD in torch peaks at 1 286 B/px (4 x 1024 px
    # tiles: 5.1 GiB), ONNX Runtime below; the flip views of tta are in the same batch (x4)
    work_bytes_per_pixel = 1536

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        *,
        device: str | torch.device = "auto",
        tta: bool = False,
        amp: bool = True,
        uncertainty: bool = False,
        runtime: str = "auto",
        precision: str = "fp16",
        source: str | None = None,
    ) -> None:
        if spec.task not in _TASKS:
            raise InputError(f"{source or 'model'}: task {spec.task!r} is not one of {', '.join(_TASKS)}")
        self.spec = spec
        self.source = source
        self.device = _resolve_device(device)
        self.model = model.eval().to(self.device)
        self.uncertainty = bool(uncertainty)
        self.tta = bool(tta) or self.uncertainty
        self.channels = 2 if self.uncertainty else 1
        self.work_bytes_per_pixel = type(self).work_bytes_per_pixel * (4 if self.tta else 1)
        if precision not in ("fp16", "bf16", "fp32"):
            raise InputError(f"precision: {precision!r}; use fp16, bf16 or fp32")
        self.amp = bool(amp) and self.device.type == "cuda" and precision != "fp32"
        self._amp_dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)  # tensor cores read NHWC
        if runtime not in ("auto", "torch", "onnx"):
            raise InputError(f"runtime: {runtime!r}; use auto, torch or onnx")
        self.runtime = runtime
        self._session = None
        # Instance attributes refine the class ones the engine reads.
        self.name = spec.name
        self.size_multiple = int(getattr(model, "size_multiple", 1))
        # The radiometry the network was trained on: raw pairs unless the checkpoint says otherwise.
        # Harmonising date 2 for a model trained on raw pairs changes its inputs (LEVIR: F1 0.937 -> 0.916).
        self.default_harmonise = str(spec.training.get("harmonise", "none"))
        shape = (1, len(spec.bands), 1, 1)
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device).view(shape)
        self._std = torch.tensor(spec.std, dtype=torch.float32, device=self.device).view(shape)
        self._index: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(
        cls, spec_string: str | Path, *, device: str | torch.device = "auto", tta: bool = False, amp: bool = True,
        uncertainty: bool = False, runtime: str = "auto", precision: str = "fp16",
    ) -> LearnedModel:
        """Load a model from ``PATH`` (deltacd ``.safetensors``) or ``ARCH:PATH`` (another code's checkpoint).

        Raises
        ------
        MissingInputError
            The file does not exist.
        InputError
            Unknown ``ARCH`` (the message lists the supported ones), a corrupt or foreign file
            (named in the message), or an unusable device.
        """
        text = str(spec_string)
        map_location = "cpu"  # loaded on CPU, then moved: a GPU-saved file loads on a CPU-only machine
        match = None if Path(text).exists() else _ARCH_PREFIX.match(text)
        if match:
            arch, path = match["arch"].lower(), Path(match["path"])
            if arch not in FOREIGN_CHECKPOINTS:
                raise InputError(
                    f"model {text!r}: unknown architecture {match['arch']!r}; supported as ARCH:PATH: "
                    f"{', '.join(sorted(FOREIGN_CHECKPOINTS))} (a deltacd .safetensors checkpoint needs no prefix)"
                )
            model, spec = FOREIGN_CHECKPOINTS[arch](path, map_location)
        else:
            path = Path(text)
            model, spec = load_checkpoint(path, map_location=map_location)
        log.info("loaded %s model from %s (bands %s)", spec.name, path, ",".join(spec.bands))
        return cls(model, spec, device=device, tta=tta, amp=amp, uncertainty=uncertainty, runtime=runtime, precision=precision,
                   source=str(path))

    def __getstate__(self) -> dict:
        """Picklable (sent to Dask workers): an ONNX Runtime session cannot be, so each process opens its own."""
        state = dict(self.__dict__)
        state["_session"] = None
        state["_had_session"] = self._session is not None
        return state

    def __setstate__(self, state: dict) -> None:
        had_session = state.pop("_had_session", False)
        self.__dict__.update(state)
        if had_session:
            self.choose_runtime()

    # ------------------------------------------------------------------ bands

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names the model takes, in its order."""
        return tuple(self.spec.bands)

    @property
    def gsd_m(self) -> float | None:
        """Ground sampling distance (m) the network was trained at, when its checkpoint records it."""
        return self.spec.gsd_m

    def select_bands(self, pair_bands: Sequence[str]) -> tuple[int, ...]:
        """Record (and return) the positions of the model's bands among ``pair_bands``, matched by name.

        Raises
        ------
        InputError
            One of the model's bands is not among ``pair_bands``.
        """
        have = [canonical(b) for b in pair_bands]
        need = [canonical(b) for b in self.spec.bands]
        # an RGB(N) model on Sentinel-2 band names: B02, B03, B04, B08 stand for B, G, R, N
        found = [b if b in have else SENTINEL2_EQUIVALENT.get(b, b) for b in need]
        missing = [b for b, f in zip(need, found, strict=True) if f not in have]
        if missing:
            where = f"{Path(self.source).name}: " if self.source else ""
            raise InputError(
                f"{where}model needs bands {','.join(need)}; the images have {','.join(have)} (missing {','.join(missing)}); "
                "declare the images' band order (bands_before/bands_after, e.g. B,G,R,N) or use a model trained on these bands"
            )
        self._index = tuple(have.index(f) for f in found)
        return self._index

    def fit(self, sample: PixelSample) -> None:
        """Match the model's bands to the pair's (``sample.bands``), and choose the runtime; the weights are not changed."""
        self.select_bands(sample.bands)
        self.choose_runtime()

    def choose_runtime(self, tile: int = 256) -> str:
        """Open an ONNX Runtime session when ``runtime`` asks for it (or ``auto`` on the CPU with onnxruntime installed)."""
        if self._session is not None or self.runtime == "torch" or self.device.type != "cpu":
            return "onnx" if self._session is not None else "torch"
        try:
            import onnx  # noqa: F401 - the exporter needs it
            import onnxruntime  # noqa: F401
        except ImportError:
            if self.runtime == "onnx":
                raise InputError("runtime onnx: install onnxruntime and onnx (pip install onnxruntime onnx)") from None
            return "torch"
        try:
            self._session = self._onnx_session(tile)
        except Exception as exc:  # a network the exporter cannot trace runs in torch, with a note
            if self.runtime == "onnx":
                raise InputError(f"runtime onnx: {self.name} cannot be exported to ONNX ({exc}); use runtime torch") from exc
            log.info("%s: ONNX export failed (%s); running in torch", self.name, exc)
        return "onnx" if self._session is not None else "torch"

    # ------------------------------------------------------------------ inference

    def _to_tensor(self, values: np.ndarray) -> torch.Tensor:
        if values.ndim != 4:
            raise InputError(f"{self.name}: expects [B, C, H, W] arrays; got shape {values.shape}")
        if self._index is not None:
            if values.shape[1] <= max(self._index):
                raise InputError(
                    f"{self.name}: arrays have {values.shape[1]} band(s) but the band selection expects "
                    f"at least {max(self._index) + 1}; call select_bands with these arrays' band names"
                )
            if self._index != tuple(range(values.shape[1])):
                values = values[:, list(self._index)]
        elif values.shape[1] != len(self.spec.bands):
            raise InputError(
                f"{self.name}: arrays have {values.shape[1]} band(s), the model takes {len(self.spec.bands)} "
                f"({','.join(self.spec.bands)}); call fit(sample) or select_bands(pair_bands) first"
            )
        x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        if self.device.type == "cuda":  # pinned memory: the copy to the GPU runs without blocking the host
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        # NaN (no data) becomes the band mean, i.e. 0 after normalisation; those pixels are masked anyway.
        return torch.nan_to_num((x - self._mean) / self._std, nan=0.0, posinf=0.0, neginf=0.0)

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The network's logits: ONNX Runtime when it was chosen (``runtime``), else torch."""
        if self._session is not None:
            given = {"before": x.numpy(), "after": y.numpy()}
            names = [i.name for i in self._session.get_inputs()]  # a single-date network (building-unet) has no "after"
            # One tile per run: ONNX Runtime gains nothing from batches on a CPU, and its first run at a
            # batch's size pages in all the activations (TinyCD, 9 tiles of 1 024 px: one at a time
            # 9.3 s and 1.5 GB from the first run on; in batches of 3, 15.3 s cold, 9.9 s warm, 4.9 GB).
            logits = [self._session.run(None, {name: given[name][i:i + 1] for name in names})[0] for i in range(len(x))]
            return torch.from_numpy(np.concatenate(logits))
        if self.device.type == "cuda":
            x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
        return self.model(x, y)

    def _onnx_session(self, tile: int):
        """An ONNX Runtime session on the CPU over the network exported to ONNX (dynamic batch and size).

        The export (1.0 s for TinyCD; the session itself 0.03 s) is kept in :func:`onnx_cache_dir`
        under a hash of everything that defines the graph, and reused by later runs.
        """
        import tempfile

        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        cache = onnx_cache_dir()
        cached = cache / f"{self._onnx_key()}.onnx" if cache is not None else None
        if cached is not None and cached.is_file():
            try:
                return ort.InferenceSession(str(cached), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # a damaged cache file is exported again, below
                log.info("%s: cached ONNX graph %s unreadable (%s); exporting again", self.name, cached, exc)
        if cached is not None:
            try:
                cache.mkdir(parents=True, exist_ok=True)
                folder = Path(tempfile.mkdtemp(prefix=".export-", dir=cache))
            except OSError as exc:
                log.info("%s: ONNX cache %s not writable (%s); exporting to a temporary folder", self.name, cache, exc)
                cached = None
        if cached is None:
            folder = Path(tempfile.mkdtemp(prefix="deltacd-onnx-"))
        path = folder / "model.onnx"
        try:
            example = torch.zeros(1, len(self.spec.bands), tile, tile)
            axes = {0: "batch", 2: "height", 3: "width"}
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notices about tracing are not the user's concern
                torch.onnx.export(self.model, (example, example), path, input_names=["before", "after"], output_names=["logits"],
                                  dynamic_axes={"before": axes, "after": axes, "logits": axes}, opset_version=_ONNX_OPSET,
                                  dynamo=False)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            if cached is not None:
                path.replace(cached)  # complete files only: another run never reads a half-written graph
        finally:
            path.unlink(missing_ok=True)
            folder.rmdir()
        return session

    def _onnx_key(self) -> str:
        """Hash of what defines the exported graph: versions, architecture and settings, every tensor of the state."""
        digest = hashlib.sha256()
        settings = {"torch": torch.__version__, "opset": _ONNX_OPSET, "class": type(self.model).__qualname__,
                    "name": self.spec.name, "kwargs": self.spec.kwargs, "bands": len(self.spec.bands)}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for key, tensor in self.model.state_dict().items():
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:32]

    def _probability(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.spec.task == "binary":
            return torch.sigmoid(logits[:, 0])
        return 1.0 - torch.softmax(logits, dim=1)[:, 0]  # probability of any change class

    def predict(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Change probability of a batch of windows.

        Parameters
        ----------
        before, after : np.ndarray
            float32 [B, C, H, W] in raw DN, the pair's bands (or the model's, see the class notes).

        Returns
        -------
        np.ndarray
            float32 [B, H, W] in [0, 1].
        """
        x, y = self._to_tensor(before), self._to_tensor(after)
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            flips += [(-1,), (-2,), (-2, -1)]
        n = x.shape[0]
        with torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self._amp_dtype, enabled=self.amp):
            # All flipped views in one batch: one forward pass (eval mode, so samples stay independent).
            xs = torch.cat([x.flip(d) if d else x for d in flips])
            ys = torch.cat([y.flip(d) if d else y for d in flips])
            prob = self._probability(self._forward(xs, ys))
            views = [prob[i * n : (i + 1) * n] for i in range(len(flips))]
            total = sum(v.flip(d) if d else v for v, d in zip(views, flips, strict=True))
            prob = (total / len(flips)).clamp_(0.0, 1.0)
            if self.uncertainty:
                p = prob.float().clamp(1e-6, 1 - 1e-6)
                entropy = -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))
                return torch.stack([prob.float(), entropy], dim=1).cpu().numpy()
        return prob.float().cpu().numpy()

    # ------------------------------------------------------------------ decisions and record

    def auto_threshold(self, hist: Histogram) -> float:
        """The threshold stored with the model (chosen on validation), whatever the scene."""
        return float(self.spec.threshold)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": "learned",
            "model": self.spec.name,
            "kwargs": self.spec.kwargs,
            "bands": list(self.spec.bands),
            "mean": list(self.spec.mean),
            "std": list(self.spec.std),
            "threshold": float(self.spec.threshold),
            "task": self.spec.task,
            "gsd_m": self.spec.gsd_m,
            "source": self.source,
            "tta": self.tta,
            "uncertainty": self.uncertainty,
            "runtime": "onnxruntime" if self._session is not None else "torch",
            "default_harmonise": self.default_harmonise,
            "device": str(self.device),
            "amp": self.amp,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "data": self.spec.data,
            "training": self.spec.training,
        }
