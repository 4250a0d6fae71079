"""Cut labelled sources into chips, split them by spatial blocks and write a self-describing dataset.

Chip layout
    Chips of ``chip_size`` px start every ``stride`` px from the top-left corner of each scene; when
    the scene side is not covered exactly, one more chip is placed flush with the right / bottom
    edge (it overlaps its neighbour), so every pixel is in a chip and no chip is padded. A scene
    smaller than ``chip_size`` is an error. Chips whose labelled fraction (pixels that are neither
    no-data at either date nor unlabelled) is below ``min_valid_fraction`` are not written.

Split rule (spatial blocks)
    Each georeferenced scene is divided into blocks of ``block_size`` x ``block_size`` source
    pixels from its top-left corner (default ``4 * chip_size``); an image of a ``chips`` or ``xbd``
    source is one block. A chip belongs to the block holding its centre pixel. Each source's blocks
    (those holding at least one chip; a ``chips`` source may group images into blocks with
    ``block_pattern``) are shuffled with ``seed`` and the first
    ``round(n * test_fraction)`` go to test, the next ``round(n * val_fraction)`` to val, the rest to
    train; a source with ``split`` set sends every chip there. Chips that straddle two blocks are
    resolved by priority, test > val > train: within a scene, a chip is dropped when its footprint
    grown by ``guard_px`` pixels overlaps a kept chip of a higher-priority split. So no pixel is
    ever in two splits, and chips of different splits are at least ``guard_px`` pixels apart
    (default 1: they do not even touch).

The folder is written under a temporary name beside ``out_dir`` and renamed when complete; see
:mod:`deltacd.datasets.manifest` for its layout.
"""

from __future__ import annotations

import bisect
import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, TypeAdapter
from pydantic.dataclasses import dataclass as pydantic_dataclass
from rasterio.windows import Window

from deltacd.config import STRICT, build_options, read_yaml
from deltacd.datasets.chip_files import write_chip
from deltacd.datasets.manifest import CHIPS_CSV, FORMAT, MANIFEST, SPLITS, BandMoments, ChipRecord, write_chips
from deltacd.datasets.sources import OpenedSource, Scene, SourceConfig, open_source
from deltacd.errors import InputError
from deltacd.io.outputs import check_output, input_paths, staged_output
from deltacd.io.records import write_json

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]

#: Names of the binary label classes.
BINARY_CLASSES = {0: "no-change", 1: "change"}


@pydantic_dataclass(frozen=True, config=STRICT)
class SplitConfig:
    """How chips are divided into train / val / test (see the module docstring).

    Attributes
    ----------
    val_fraction, test_fraction
        Share of each source's blocks sent to val and test (their sum must stay below 1).
    block_size
        Side of the spatial blocks in source pixels (default ``4 * chip_size``).
    guard_px
        Minimum gap in pixels between chips of different splits in one scene (lower-priority chips
        are dropped to keep it); 0 allows chips of different splits to touch (never to overlap).
    seed
        Seed of the block draw.
    """

    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    block_size: PositiveInt | None = None
    guard_px: NonNegativeInt = 1
    seed: int = 0


@pydantic_dataclass(frozen=True, config=STRICT)
class DatasetConfig:
    """Everything :func:`prepare_dataset` can be told (the keys of its YAML file).

    Attributes
    ----------
    sources
        One or more sources, each a mapping with ``kind``: ``chips``, ``polygons``, ``landcover``,
        ``xbd`` or ``single_date`` (see :mod:`deltacd.datasets.sources` for their keys). All must
        share band names and data type.
    chip_size, stride
        Chip side and step in pixels (stride default: ``chip_size``, no overlap).
    ignore_index
        Label value of pixels to ignore (no data at either date, unlabelled); 2..255.
    min_valid_fraction
        Chips with a smaller share of labelled pixels are skipped.
    split
        The split rule (:class:`SplitConfig`).
    """

    sources: Annotated[list[SourceConfig], Field(min_length=1)]
    chip_size: PositiveInt = 256
    stride: PositiveInt | None = None
    ignore_index: Annotated[int, Field(ge=2, le=255)] = 255
    min_valid_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    split: SplitConfig = Field(default_factory=SplitConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings (paths as strings)."""
        return TypeAdapter(DatasetConfig).dump_python(self, mode="json")


def load_config(config: DatasetConfig | dict[str, Any] | str | Path) -> DatasetConfig:
    """A validated :class:`DatasetConfig` from an instance, a mapping or a YAML file.

    Relative paths in a YAML file are taken from the current working directory (as for
    ``deltacd detect --config``).

    Raises
    ------
    MissingInputError
        The YAML file does not exist.
    InputError
        Unknown key, bad value, or settings that contradict each other (one line, naming the key).
    """
    if isinstance(config, DatasetConfig):
        cfg, where = config, "DatasetConfig"
    elif isinstance(config, dict):
        where = "prepare_dataset()"
        cfg = build_options(DatasetConfig, config, source=where)
    elif isinstance(config, (str, Path)):
        where = str(config)
        path = Path(config)
        values = read_yaml(path, what="dataset configuration file")
        if not isinstance(values, dict):
            raise InputError(f"{path}: expected a mapping of settings (sources:, chip_size: ...), got {type(values).__name__}")
        cfg = build_options(DatasetConfig, values, source=where)
    else:
        raise InputError(f"config: got {type(config).__name__}, expected a DatasetConfig, a dict or a YAML path")
    if cfg.split.val_fraction + cfg.split.test_fraction >= 1:
        raise InputError(
            f"{where}: split.val_fraction + split.test_fraction = {cfg.split.val_fraction + cfg.split.test_fraction:g}; "
            "keep their sum below 1 so that some blocks train"
        )
    names = [s.name or f"{s.kind}{i}" for i, s in enumerate(cfg.sources)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{where}: source name(s) {', '.join(twice)} used twice; give each source its own name")
    return cfg


def chip_offsets(length: int, chip_size: int, stride: int) -> list[int]:
    """Start offsets of chips along one side of ``length`` px.

    Every ``stride`` px from 0, plus one chip flush with the end when the side is not covered.
    Empty when ``length < chip_size``.

    >>> chip_offsets(600, 256, 256)
    [0, 256, 344]
    """
    if length < chip_size:
        return []
    offsets = list(range(0, length - chip_size + 1, stride))
    if offsets[-1] + chip_size < length:
        offsets.append(length - chip_size)
    return offsets


@dataclass
class _Chip:
    """A chip written to the temporary folder, with what the manifest needs from it."""

    id: str
    source: OpenedSource
    scene: Scene
    row: int
    col: int
    block: str
    moments: BandMoments
    balance: np.ndarray  # int64 [3]: pixels labelled 0, 1, ignored
    target_counts: dict[str, Counter] = field(default_factory=dict)
    transitions: Counter = field(default_factory=Counter)
    split: str | None = None
    pair_of: tuple[str, str] | None = None  # STAR pairs: (before, after) single-date chip ids


def prepare_dataset(
    config: DatasetConfig | dict[str, Any] | str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Cut the sources of ``config`` into chips and write a self-describing training dataset.

    Parameters
    ----------
    config
        A :class:`DatasetConfig`, a mapping of its keys, or a YAML file of them.
    out_dir
        Folder to create (see :mod:`deltacd.datasets.manifest` for its content).
    overwrite
        Replace an existing dataset folder at ``out_dir``.
    progress
        Called with (windows done, windows in total).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    MissingInputError, InputError
        A source is missing or unusable; nothing is written.
    OutputError
        ``out_dir`` exists and ``overwrite`` is False, or it is not a dataset folder.
    """
    cfg = load_config(config)
    out = Path(out_dir).absolute()
    inputs = _input_paths(cfg)
    check_output(out, overwrite=overwrite, inputs=inputs)
    chip = cfg.chip_size
    stride = cfg.stride or chip
    block = cfg.split.block_size or 4 * chip
    sources: list[OpenedSource] = []
    try:
        for index, source_cfg in enumerate(cfg.sources):
            sources.append(open_source(source_cfg, index, ignore_index=cfg.ignore_index))
        bands, dtype = _common_bands(sources)
        _check_disjoint(sources)
        plan = _plan(sources, chip, stride)
        targets = tuple(sorted({t for s in sources for t in s.targets}))
        target_classes = _merge_target_classes(sources, targets)
        with staged_output(out, overwrite=overwrite, kind="dataset", inputs=inputs) as tmp:
            chips = _cut(plan, tmp, cfg, chip, block, bands, targets, progress)
            rule = _assign_splits(chips, sources, cfg.split, chip, block)
            for c in chips:
                if c.split is None:
                    for folder in ("A", "B", "label", *targets):
                        (tmp / folder / f"{c.id}.tif").unlink()
            kept = [c for c in chips if c.split is not None]
            for source in sources:
                if source.pairer is not None:  # single_date: split single-date chips -> STAR pairs
                    kept = source.pairer(kept, tmp, targets=targets, chip_size=chip)
            manifest = _manifest(cfg, sources, kept, bands, dtype, chip, stride, block, targets, target_classes, rule)
            write_chips(tmp / CHIPS_CSV, [
                ChipRecord(c.id, c.split, c.source.index, c.source.name, c.scene.name, c.row, c.col, c.block, c.pair_of)
                for c in kept
            ])
            write_json(tmp / MANIFEST, manifest)
    finally:
        for source in sources:
            source.close()
    log.info("dataset %s: %s", out, manifest["splits"])
    return out


# --- steps ------------------------------------------------------------------------------------


def _input_paths(cfg: DatasetConfig) -> list[Path]:
    """Every file or folder the sources read: the dataset folder may never replace one of them."""
    return input_paths(*[getattr(source, f.name) for source in cfg.sources for f in fields(source)])


def _source_resolution(source: OpenedSource, source_cfg: Any) -> float | None:
    """Ground sampling distance (m) of a source: its scenes' georeference, else its ``resolution_m`` setting."""
    from deltacd.io.grid import Grid

    values = {round(Grid(s.crs, s.transform, s.width, s.height).res_m, 4)
              for s in source.scenes if s.crs is not None and s.transform is not None and not s.transform.is_identity}
    if values:
        return float(np.median(sorted(values)))
    return getattr(source_cfg, "resolution_m", None)


def _common_bands(sources: list[OpenedSource]) -> tuple[tuple[str, ...], str]:
    first = sources[0]
    for s in sources[1:]:
        if sorted(s.bands) != sorted(first.bands):
            raise InputError(
                f"source {s.name} has bands {','.join(s.bands)} but source {first.name} has {','.join(first.bands)}; "
                "all sources must share their bands (declare them with bands / bands_before / bands_after) "
                "or go in separate datasets"
            )
        if s.dtype != first.dtype:
            raise InputError(
                f"source {s.name} holds {s.dtype} values but source {first.name} holds {first.dtype}; "
                "one normalisation cannot serve both, build separate datasets (or convert with gdal_translate -ot)"
            )
        s.reorder(first.bands)
    return first.bands, first.dtype


def _check_disjoint(sources: list[OpenedSource]) -> None:
    """The same image in two sources would put one place in two splits (or label it twice)."""
    owner: dict[Path, str] = {}
    for source in sources:
        for scene in source.scenes:
            key = scene.before_path.resolve()
            if owner.setdefault(key, source.name) != source.name:
                raise InputError(
                    f"{scene.before_path}: in sources {owner[key]} and {source.name}; "
                    "give each image to one source (make their globs disjoint)"
                )


def _plan(sources: list[OpenedSource], chip: int, stride: int) -> list[tuple[OpenedSource, Scene, list[tuple[int, int]]]]:
    plan = []
    for source in sources:
        names: set[str] = set()
        for scene in source.scenes:
            rows, cols = chip_offsets(scene.height, chip, stride), chip_offsets(scene.width, chip, stride)
            if not rows or not cols:
                raise InputError(
                    f"source {source.name}: scene {scene.name} is {scene.width}x{scene.height} px, smaller than "
                    f"chip_size {chip}; lower chip_size or leave the scene out"
                )
            if scene.name in names:
                raise InputError(f"source {source.name}: two scenes named {scene.name}; rename one of the files")
            names.add(scene.name)
            plan.append((source, scene, [(r, c) for r in rows for c in cols]))
    return plan


def _merge_target_classes(sources: list[OpenedSource], targets: tuple[str, ...]) -> dict[str, dict[int, str]]:
    merged: dict[str, dict[int, str]] = {t: {} for t in targets}
    for s in sources:
        for target, table in s.target_classes.items():
            for code, name in table.items():
                known = merged[target].setdefault(code, name)
                if known != name:
                    raise InputError(
                        f"source {s.name}: {target} class {code} is {name!r} but another source calls it {known!r}; "
                        "use one class table (classes) for every source"
                    )
    return merged


def _cut(plan, tmp: Path, cfg: DatasetConfig, chip: int, block: int, bands: tuple[str, ...],
         targets: tuple[str, ...], progress: Progress | None) -> list[_Chip]:
    """Read every chip window, keep those labelled enough, write them; returns the written chips."""
    for folder in ("A", "B", "label", *targets):
        (tmp / folder).mkdir()
    ignore = cfg.ignore_index
    total = sum(len(windows) for _, _, windows in plan)
    done = 0
    chips: list[_Chip] = []
    for source, scene, windows in plan:
        try:
            for row, col in windows:
                window = Window(col, row, chip, chip)
                sw = scene.read(window)
                labelled = sw.label != ignore
                done += 1
                if labelled.mean() < cfg.min_valid_fraction:
                    if progress:
                        progress(done, total)
                    continue
                chip_id = f"{source.name}__{scene.name}__{row:05d}_{col:05d}"
                transform = scene.window_transform(window)
                nodata = source.nodata
                write_chip(tmp / "A" / f"{chip_id}.tif", sw.before, scene.crs, transform, nodata, bands)
                write_chip(tmp / "B" / f"{chip_id}.tif", sw.after, scene.crs, transform, nodata, bands)
                write_chip(tmp / "label" / f"{chip_id}.tif", sw.label[None], scene.crs, transform, ignore, ("label",))
                target_counts = {}
                for target in targets:
                    values = sw.targets.get(target)
                    if values is None:  # this source has no such ground truth: all ignored
                        values = np.full(sw.label.shape, ignore, dtype=np.uint8)
                    write_chip(tmp / target / f"{chip_id}.tif", values[None], scene.crs, transform, ignore, (target,))
                    codes, counts = np.unique(values, return_counts=True)
                    target_counts[target] = Counter({int(k): int(n) for k, n in zip(codes, counts)})
                transitions: Counter = Counter()
                if "from" in sw.targets and "to" in sw.targets:
                    both = labelled & (sw.targets["from"] != ignore) & (sw.targets["to"] != ignore)
                    pairs = sw.targets["from"][both].astype(np.int32) * 256 + sw.targets["to"][both]
                    codes, counts = np.unique(pairs, return_counts=True)
                    transitions = Counter({(int(k) // 256, int(k) % 256): int(n) for k, n in zip(codes, counts)})
                valid = sw.valid
                moments = BandMoments.of(sw.before[:, valid]).merge(BandMoments.of(sw.after[:, valid]))
                balance = np.array([np.count_nonzero(sw.label == 0), np.count_nonzero(sw.label == 1),
                                    np.count_nonzero(~labelled)], dtype=np.int64)
                chips.append(_Chip(chip_id, source, scene, row, col, _block_of(source, scene, row, col, chip, block),
                                   moments, balance, target_counts, transitions))
                if progress:
                    progress(done, total)
        finally:
            scene.close()  # image scenes drop their cached arrays
    return chips


def _block_of(source: OpenedSource, scene: Scene, row: int, col: int, chip: int, block: int) -> str:
    if source.image_blocks:
        return f"{source.name}/{scene.block or scene.name}"
    return f"{source.name}/{scene.name}/{(row + chip // 2) // block}_{(col + chip // 2) // block}"


def _assign_splits(chips: list[_Chip], sources: list[OpenedSource], rule: Any, chip: int, block: int) -> dict[str, Any]:
    """Set each chip's split (None: dropped by the guard); returns counts for the manifest."""
    per_source: dict[int, list[_Chip]] = {}
    for c in chips:
        per_source.setdefault(c.source.index, []).append(c)
    blocks_drawn = {}
    for source in sources:
        members = per_source.get(source.index, [])
        if source.forced_split:
            for c in members:
                c.split = source.forced_split
            blocks_drawn[source.name] = {"forced": source.forced_split}
            continue
        blocks = sorted({c.block for c in members})
        n = len(blocks)
        n_test = math.floor(n * rule.test_fraction + 0.5)
        n_val = min(math.floor(n * rule.val_fraction + 0.5), n - n_test)
        order = np.random.default_rng([rule.seed, source.index]).permutation(n)
        split_of = {}
        for rank, i in enumerate(order):
            split_of[blocks[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        for c in members:
            c.split = split_of[c.block]
        counts = Counter(split_of.values())
        blocks_drawn[source.name] = {s: counts.get(s, 0) for s in SPLITS}
        for name, fraction, got in (("val", rule.val_fraction, n_val), ("test", rule.test_fraction, n_test)):
            if fraction > 0 and got == 0 and n:
                log.warning("source %s: %d block(s) only, none drawn for %s; lower block_size or force a split", source.name, n, name)

    dropped = 0
    by_scene: dict[int, list[_Chip]] = {}
    for c in chips:
        if not c.source.image_blocks:
            by_scene.setdefault(id(c.scene), []).append(c)
    for members in by_scene.values():
        dropped += _guard(members, chip, rule.guard_px)
    return {"blocks": blocks_drawn, "dropped_by_guard": dropped}


def _guard(chips: list[_Chip], chip: int, guard: int) -> int:
    """Drop lower-priority chips within ``guard`` px of a kept higher-priority chip; returns the count."""
    priority = {"test": 2, "val": 1, "train": 0}
    rows = sorted({c.row for c in chips})
    cols = sorted({c.col for c in chips})
    reach = chip + guard  # two chips conflict when |d_row| < reach and |d_col| < reach
    kept: dict[tuple[int, int], int] = {}
    dropped = 0
    levels = [priority[c.split] for c in chips]
    for level in (2, 1, 0):
        for c in (c for c, lv in zip(chips, levels) if lv == level):
            r0, r1 = bisect.bisect_right(rows, c.row - reach), bisect.bisect_left(rows, c.row + reach)
            q0, q1 = bisect.bisect_right(cols, c.col - reach), bisect.bisect_left(cols, c.col + reach)
            conflict = any(
                kept.get((r, q), -1) > level for r in rows[r0:r1] for q in cols[q0:q1]
            )
            if conflict:
                c.split = None
                dropped += 1
            else:
                kept[(c.row, c.col)] = level
    return dropped


def _manifest(cfg: DatasetConfig, sources: list[OpenedSource], chips: list[_Chip], bands: tuple[str, ...], dtype: str,
              chip: int, stride: int, block: int, targets: tuple[str, ...], target_classes: dict[str, dict[int, str]],
              rule_counts: dict[str, Any]) -> dict[str, Any]:
    from deltacd._version import __version__

    train = [c for c in chips if c.split == "train"]
    if not train:
        raise InputError(
            f"no chip ended up in the train split ({len(chips)} chip(s) in val/test); lower split.val_fraction / "
            "test_fraction, split.block_size or min_valid_fraction, or add a training source"
        )
    moments = BandMoments.empty(len(bands))
    for c in train:
        moments = moments.merge(c.moments)
    std = moments.std
    if np.any(std == 0):
        flat = [b for b, s in zip(bands, std) if s == 0]
        warnings.warn(f"band(s) {', '.join(flat)} constant over the train chips; their std is set to 1", stacklevel=3)
        std = np.where(std == 0, 1.0, std)

    resolutions = {s.name: _source_resolution(s, cfg.sources[s.index]) for s in sources}
    known = [r for r in resolutions.values() if r is not None]
    same = bool(known) and len(known) == len(resolutions) and max(known) <= 1.05 * min(known)
    splits = {s: sum(1 for c in chips if c.split == s) for s in SPLITS}
    balance = {}
    for s in SPLITS:
        total = sum((c.balance for c in chips if c.split == s), np.zeros(3, dtype=np.int64))
        balance[s] = {"0": int(total[0]), "1": int(total[1]), "ignored": int(total[2])}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "deltacd_version": __version__,
        "bands": list(bands),
        "dtype": dtype,
        "chip_size": chip,
        # ground sampling distance (m) of every chip, when all sources agree: a model trained on it runs at it
        "resolution_m": round(float(np.median(known)), 4) if same else None,
        "stride": stride,
        "ignore_index": cfg.ignore_index,
        "label_kind": "binary",
        "classes": {str(k): v for k, v in BINARY_CLASSES.items()},
        "normalisation": {
            "mean": {b: float(m) for b, m in zip(bands, moments.mean)},
            "std": {b: float(s) for b, s in zip(bands, std)},
            "pixels": int(moments.count),
            "over": "valid pixels of the train chips, both dates, raw digital numbers; std with ddof=0",
        },
        "splits": splits,
        "class_balance": balance,
        "sources": [
            {
                "kind": s.kind,
                "name": s.name,
                "bands": list(s.bands),
                "dtype": s.dtype,
                "scenes": len(s.scenes),
                "split": s.forced_split,
                "n_chips": sum(1 for c in chips if c.source is s),
                "resolution_m": resolutions[s.name],
                **s.description,
            }
            for s in sources
        ],
        "split_rule": {
            "kind": "spatial-blocks",
            "block_size": block,
            "val_fraction": cfg.split.val_fraction,
            "test_fraction": cfg.split.test_fraction,
            "guard_px": cfg.split.guard_px,
            "seed": cfg.split.seed,
            "rule": (
                "georeferenced scenes: blocks of block_size px from the top-left corner, chip -> block of its centre; "
                "chips/xbd sources: one block per image; each source's blocks drawn with seed "
                "(round(n*test_fraction) test, round(n*val_fraction) val, rest train) unless the source forces a split; "
                "within a scene, chips closer than guard_px to a chip of a higher-priority split (test > val > train) are dropped"
            ),
            "min_valid_fraction": cfg.min_valid_fraction,
            **rule_counts,
        },
        "extra_targets": list(targets),
    }
    if targets:
        doc["target_classes"] = {t: {str(k): v for k, v in sorted(target_classes[t].items())} for t in targets}
        doc["target_balance"] = {
            t: {s: {str(k): n for k, n in sorted(sum((c.target_counts[t] for c in chips if c.split == s), Counter()).items())}
                for s in SPLITS}
            for t in targets
        }
    if "from" in targets:
        table = sum((c.transitions for c in chips), Counter())
        names = target_classes.get("from", {})
        doc["transitions"] = [
            {"from": f, "to": t, "from_name": names.get(f, str(f)), "to_name": names.get(t, str(t)), "pixels": n}
            for (f, t), n in sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
    doc["config"] = cfg.to_dict()
    return doc
