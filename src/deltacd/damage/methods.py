"""Three ways to grade buildings, behind one interface: change rules, a chip classifier, a pixel segmenter.

Every method receives the prepared pair (aligned, co-registered, harmonised), the buildings and
the statistics of the pixel change score in each footprint and ring (:class:`DamageContext`),
and returns a grade per building, with grade probabilities for the trained ones
(:class:`BuildingGrades`).

* ``change`` (:class:`ChangeRules`, no training): the share of a footprint's valid pixels whose
  change score exceeds the scene threshold, turned into grades by fixed rules (defaults: below
  10 % no damage, 10-25 % minor, 25-50 % major, from 50 % destroyed). Roof damage, debris and
  collapse change the roof's appearance; the rule says how much of the roof changed. It cannot
  tell damage from other change (a repainted roof, a tarpaulin, shadows) and depends on the
  threshold of the pixel score.
* ``classifier`` (:class:`ChipClassifier`): a trained :class:`~deltacd.models.damage.SiameseChipClassifier`
  on chips centred on each building, at the resolution it was trained at.
* ``segmentation`` (:class:`PixelSegmentation`): a trained siamese U-Net with 5 classes per pixel
  (background, 4 grades; xView2 style) run through the tiled engine; each building takes the
  majority grade of its pixels and the mean grade probabilities.

A building whose valid pixels cover less than ``min_valid_share`` of its footprint (outside the
pair, over no data) is unclassified (-1) whatever the method.

The three are registered in the ``damage`` table of :mod:`deltacd.methods.registry` (on import
of this module); another :class:`DamageMethod` registered there with
:func:`~deltacd.methods.registry.register_method` is built by :func:`build_damage_method` alike.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import geopandas as gpd
import numpy as np

from deltacd.errors import InputError
from deltacd.methods.base import ChangeMethod, Method
from deltacd.methods.registry import DAMAGE_METHODS, register_method
from deltacd.outputs.grades import GRADES, UNCLASSIFIED
from deltacd.postprocess.zonal import FeatureLabels, ZonalAccumulator, ZonalStats
from deltacd.prepare.align import AlignedPair
from deltacd.prepare.chip import read_chip

Progress = Callable[[str, int, int], None]


@dataclass
class DamageContext:
    """What a damage method works from (see the module notes)."""

    pair: AlignedPair
    buildings: gpd.GeoDataFrame  # in pair.grid.crs, index 0..n-1
    stats: ZonalStats  # pixel change score inside each footprint
    valid_share: np.ndarray  # [n] share of each footprint's area with valid pixels at both dates
    tile_size: int | None = None
    batch_size: int = 4
    progress: Progress | None = None


@dataclass
class BuildingGrades:
    """Grade per building (int8, -1 unclassified) and, for trained methods, probabilities [n, 4]."""

    grade: np.ndarray
    probability: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)  # method state for run.json


class DamageMethod(Method):
    """A way to grade buildings (module notes); register one with :func:`~deltacd.methods.registry.register_method`.

    Class attributes
    ----------------
    name, kind
        Registry key (``deltacd damage --method NAME``) and table (``"damage"``).
    trained
        True: the method runs a trained model, and its constructor takes the model file as
        its first argument, with keywords ``device`` and ``min_valid_share``. False: it takes
        keywords only (``min_valid_share``, and ``share_thresholds`` when it accepts them).
    model_task
        The checkpoint task a trained method runs (``ModelSpec.task``); ``--method auto`` with a
        model picks the registered method whose ``model_task`` is the model's.
    """

    kind: ClassVar[str] = "damage"
    trained: ClassVar[bool] = False
    model_task: ClassVar[str | None] = None

    def __init__(self, *, min_valid_share: float = 0.5):
        self.min_valid_share = float(min_valid_share)

    @abstractmethod
    def grade(self, context: DamageContext) -> BuildingGrades:
        """Grades of ``context.buildings``."""

    def unclassify(self, grades: BuildingGrades, valid_share: np.ndarray) -> BuildingGrades:
        """``grades`` with -1 where less than ``min_valid_share`` of a footprint has valid pixels (every method ends here)."""
        grades.grade = np.where(np.nan_to_num(valid_share) < self.min_valid_share, UNCLASSIFIED, grades.grade).astype(np.int8)
        return grades

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "min_valid_share": self.min_valid_share}


@register_method
class ChangeRules(DamageMethod):
    """Grades from the changed share of each footprint (no training; thresholds in the module notes)."""

    name = "change"

    def __init__(self, *, share_thresholds: tuple[float, float, float] = (0.10, 0.25, 0.50), min_valid_share: float = 0.5):
        super().__init__(min_valid_share=min_valid_share)
        values = tuple(float(v) for v in share_thresholds)
        if len(values) != 3 or not 0 < values[0] < values[1] < values[2] <= 1:
            raise InputError(
                f"share_thresholds: {share_thresholds!r}; give three increasing shares in (0, 1] "
                "(minor, major, destroyed), e.g. 0.1,0.25,0.5"
            )
        self.share_thresholds = values

    def grade(self, context: DamageContext) -> BuildingGrades:
        share = np.nan_to_num(context.stats.share_above, nan=0.0)
        grade = np.searchsorted(np.array(self.share_thresholds), share, side="right").astype(np.int8)
        return self.unclassify(BuildingGrades(grade), context.valid_share)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"share_thresholds": list(self.share_thresholds)}


def _normaliser(spec, device):
    import torch

    shape = (1, len(spec.bands), 1, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(shape)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(shape)
    return lambda values: torch.nan_to_num((torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device)
                                            - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)


def _band_index(spec, pair_bands, source: str) -> list[int]:
    from deltacd.io.bands import SENTINEL2_EQUIVALENT, canonical

    have = [canonical(b) for b in pair_bands]
    index = []
    for band in (canonical(b) for b in spec.bands):
        name = band if band in have else SENTINEL2_EQUIVALENT.get(band, band)
        if name not in have:
            raise InputError(f"{source}: the model needs bands {','.join(spec.bands)}; the images have {','.join(have)}; "
                             "declare the band order (--bands-before/--bands-after) or use a model trained on these bands")
        index.append(have.index(name))
    return index


def load_damage_model(path: str | Path, task: str, *, device: str = "auto"):
    """A damage checkpoint (model in eval mode on ``device``, spec), checked to be trained for ``task``."""
    from deltacd.methods.learned import _resolve_device
    from deltacd.models.checkpoint import load_checkpoint

    model, spec = load_checkpoint(path)
    if spec.task != task:
        raise InputError(
            f"{path}: a model trained for {spec.task!r}, not {task!r}; give a {task} model "
            f"(trained with deltacd train, task: {task}) or choose the method that fits it"
        )
    resolved = _resolve_device(device)
    return model.eval().to(resolved), spec, resolved


def _run_pair(pair: AlignedPair, gsd_m: float | None) -> AlignedPair:
    """The pair on a grid at the model's training resolution (when known and different)."""
    from deltacd.engine.regrid import SAME_RESOLUTION, grid_at_resolution

    if gsd_m is None or SAME_RESOLUTION[0] <= pair.grid.res_m / gsd_m <= SAME_RESOLUTION[1]:
        return pair
    return pair.on_grid(grid_at_resolution(pair.grid, gsd_m))


class TrainedDamageMethod(DamageMethod):
    """A damage method that runs a trained model: the checkpoint of its ``model_task``, loaded on ``device``."""

    trained = True

    def __init__(self, model_path: str | Path, *, device: str = "auto", min_valid_share: float = 0.5):
        super().__init__(min_valid_share=min_valid_share)
        self.model, self.spec, self.device = load_damage_model(model_path, self.model_task, device=device)
        self.source = str(model_path)


@register_method
class ChipClassifier(TrainedDamageMethod):
    """A trained siamese chip classifier on chips centred on each building (module notes)."""

    name = "classifier"
    model_task = "damage-classifier"

    def __init__(self, model_path: str | Path, *, device: str = "auto", min_valid_share: float = 0.5):
        super().__init__(model_path, device=device, min_valid_share=min_valid_share)
        self.chip_px = int(self.spec.data.get("chip_px", 64))

    def grade(self, context: DamageContext) -> BuildingGrades:
        import torch

        pair = _run_pair(context.pair, self.spec.gsd_m)
        index = _band_index(self.spec, pair.bands, self.source)
        normalise = _normaliser(self.spec, self.device)
        buildings = context.buildings.to_crs(pair.grid.crs)
        n = len(buildings)
        probability = np.full((n, len(GRADES)), np.nan)
        order = np.argsort(-buildings.geometry.centroid.y.to_numpy(), kind="stable")  # north to south: reads in row order
        batch_size = max(1, 8 * context.batch_size)
        for start in range(0, n, batch_size):
            chunk = order[start:start + batch_size]
            chips = [read_chip(pair, buildings.geometry.values[i], self.chip_px) for i in chunk]
            before = normalise(np.stack([c[0][index] for c in chips]))
            after = normalise(np.stack([c[1][index] for c in chips]))
            mask = torch.from_numpy(np.stack([c[2] for c in chips])[:, None]).to(self.device)
            with torch.inference_mode():
                from deltacd.models.damage import ordinal_probabilities

                probability[chunk] = ordinal_probabilities(self.model(before, after, mask)).cpu().numpy()
            if context.progress is not None:
                context.progress("buildings", min(start + batch_size, n), n)
        grade = np.argmax(np.nan_to_num(probability, nan=-1.0), axis=1).astype(np.int8)
        return self.unclassify(BuildingGrades(grade, probability, {"model": self.source, "chip_px": self.chip_px,
                                                                    "run_resolution_m": pair.grid.res_m}), context.valid_share)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"model": self.source, "chip_px": self.chip_px, "gsd_m": self.spec.gsd_m,
                                     "data": self.spec.data}


class SegmentationScores(ChangeMethod):
    """A 5-class siamese damage segmenter as an engine method: grade probabilities [B, 4, H, W] per pixel."""

    name = "damage-segmentation"
    channels = len(GRADES)
    context = 32
    score_units = "probability of each damage grade, given a building"
    score_range = (0.0, 1.0)
    work_bytes_per_pixel = 4096

    def __init__(self, model, spec, device, index: list[int]):
        self.model, self.spec, self.device, self.index = model, spec, device, index
        self.size_multiple = int(getattr(model, "size_multiple", 32))
        self._normalise = _normaliser(spec, device)

    def predict(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        import torch

        x, y = self._normalise(before[:, self.index]), self._normalise(after[:, self.index])
        with torch.inference_mode():
            logits = self.model(x, y).float()
            grades = torch.softmax(logits[:, 1:], dim=1)  # the building is given: background left out
        return grades.cpu().numpy()


@register_method
class PixelSegmentation(TrainedDamageMethod):
    """A trained 5-class siamese U-Net; each building takes its pixels' majority grade (module notes)."""

    name = "segmentation"
    model_task = "damage-segmentation"

    def grade(self, context: DamageContext) -> BuildingGrades:
        from deltacd.engine.runner import predict_scene

        pair = _run_pair(context.pair, self.spec.gsd_m)
        method = SegmentationScores(self.model, self.spec, self.device, _band_index(self.spec, pair.bands, self.source))
        buildings = context.buildings.to_crs(pair.grid.crs)
        labels = FeatureLabels(buildings.geometry)
        accumulator = ZonalAccumulator(len(buildings), low=0.0, high=1.0, threshold=0.5, bins=2, classes=len(GRADES))
        progress = None if context.progress is None else (lambda d, t: context.progress("segmentation", d, t))
        for window, probabilities in predict_scene(pair, method, tile_size=context.tile_size, batch_size=context.batch_size,
                                                   progress=progress):
            valid = np.isfinite(probabilities).all(axis=0)
            accumulator.add(labels.read(pair.grid, window), probabilities=np.nan_to_num(probabilities), valid=valid)
        stats = accumulator.result()
        counted = stats.votes.sum(axis=1)
        grade = np.where(counted > 0, np.argmax(stats.votes, axis=1), UNCLASSIFIED).astype(np.int8)
        return self.unclassify(BuildingGrades(grade, stats.probability, {"model": self.source,
                                                                          "run_resolution_m": pair.grid.res_m}), context.valid_share)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"model": self.source, "gsd_m": self.spec.gsd_m, "data": self.spec.data}


#: ``--method auto``: the best method that needs no download and no training by the user. A model
#: trained on the shared xBD / Ida-BD tiles would be one, but xBD is CC BY-NC-SA 4.0 (non-commercial,
#: share-alike) and Ida-BD states no licence: weights trained on them cannot ship inside an
#: Apache-2.0 package that an agency uses operationally, so no damage model ships and ``auto``
#: is ``change`` (src/deltacd/damage/README.md).
DEFAULT_METHOD = "change"


def build_damage_method(name: str, *, model: str | Path | None, device: str = "auto", min_valid_share: float = 0.5,
                        share_thresholds: tuple[float, float, float] = (0.10, 0.25, 0.50)) -> DamageMethod:
    """The registered damage method ``name`` (``change``, ``classifier``, ``segmentation``...; ``auto``) with its model.

    ``auto``: :data:`DEFAULT_METHOD` without a model, else the method whose ``model_task`` is the model's.
    """
    if name == "auto":
        name = DEFAULT_METHOD if model is None else _method_of(model)
    if name not in DAMAGE_METHODS:
        raise InputError(f"method: unknown damage method {name!r}; available: auto, {', '.join(DAMAGE_METHODS)}")
    cls = DAMAGE_METHODS[name]
    if not cls.trained:
        if model is not None:
            raise InputError(f"model: the {name} method uses no model; drop --model or choose --method classifier/segmentation")
        options = {"share_thresholds": share_thresholds, "min_valid_share": min_valid_share}
        accepted = inspect.signature(cls.__init__).parameters
        return cls(**{key: value for key, value in options.items() if key in accepted})
    if model is None:
        raise InputError(f"method {name}: needs a trained model (--model MODEL.safetensors, from deltacd train, task: {cls.model_task})")
    return cls(model, device=device, min_valid_share=min_valid_share)


def _method_of(model: str | Path) -> str:
    from deltacd.models.checkpoint import read_spec

    task = read_spec(model).task
    for name, cls in DAMAGE_METHODS.items():
        if cls.trained and cls.model_task == task:
            return name
    raise InputError(f"{model}: a model trained for {task!r}; deltacd damage needs a damage-classifier or damage-segmentation model")


__all__ = ["DAMAGE_METHODS", "DEFAULT_METHOD", "BuildingGrades", "ChangeRules", "ChipClassifier", "DamageContext", "DamageMethod",
           "PixelSegmentation", "SegmentationScores", "TrainedDamageMethod", "build_damage_method", "load_damage_model", "read_chip"]
