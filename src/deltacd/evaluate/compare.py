"""``compare``: our change map set against post-classification comparison (PCC) of two land-cover maps.

Post-classification comparison is the usual operational method: classify each date, and call
change every pixel whose class differs (Singh 1989, doi:10.1080/01431168908903939; Coppin et al.
2004, doi:10.1080/0143116031000101675). Its errors are the product of both classifications'
errors, so two good land-cover maps still give many false changes along class boundaries and
where classes are confused. This module puts our change mask and the PCC change map side by side
on our map's grid, window by window:

* the **agreement map** (uint8 COG): 0 no change in either, 1 change only in ours, 2 change only
  in PCC, 3 change in both, 255 where our map or either land-cover map has no data; its polygons
  (``agreement.gpkg``, field ``agreement`` = 1, 2 or 3; code 0, the background, is not vectorised);
* the **from/to matrix**: area (ha) of every (class at date 1, class at date 2) pair and how much
  of each transition our map flags as change;
* with a **reference**: each method's pixel scores against it, on the same pixels (those where
  all four layers have data), with 95 % block-bootstrap intervals of F1.

All counts are over the pixels where our map and both land-cover maps have data. Land-cover maps
are rasters (warped onto our grid with nearest resampling when needed) or polygons with a class
field (rasterised with the pixel-centre rule, or all-touched); see :mod:`deltacd.evaluate.reference`.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
from pydantic import Field, NonNegativeFloat, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from rasterio.windows import Window

from deltacd._version import __version__
from deltacd.config import STRICT, build_options
from deltacd.errors import InputError
from deltacd.evaluate.agreement import N_CODES, agreement_code, count_agreement
from deltacd.evaluate.evaluate import open_prediction_grid
from deltacd.evaluate.reference import (
    LabelCoding,
    LabelSource,
    RasterLabels,
    binary_coding,
    class_coding,
    normalise_classes,
    open_labels,
    read_windows,
    scan_values,
    window_side,
)
from deltacd.io.grid import Grid
from deltacd.io.outputs import check_output, input_paths, staged_output
from deltacd.io.qgis import PCC_AGREEMENT, PCC_AGREEMENT_STYLE, categorized_qml, write_styles
from deltacd.io.records import to_json_value, write_json
from deltacd.io.vectors import spatial_layer, write_layer
from deltacd.io.writers import RasterWriter
from deltacd.metrics import (
    BootstrapCI,
    ConfusionMatrix,
    block_bootstrap_ci_from_blocks,
    block_confusion_matrices,
)
from deltacd.postprocess.polygons import CleanUp, vectorise_changes

log = logging.getLogger(__name__)

__all__ = ["AGREEMENT_CODES", "CompareOptions", "ComparisonResult", "compare"]

#: Agreement code -> meaning (255 = no data).
AGREEMENT_CODES = {0: "neither", 1: "only_ours", 2: "only_pcc", 3: "both"}
AGREEMENT_NODATA = 255

AGREEMENT_TIF = "agreement.tif"
AGREEMENT_GPKG = "agreement.gpkg"
COMPARE_JSON = "compare.json"
TRANSITIONS_CSV = "transitions.csv"
AGREEMENT_PNG = "agreement.png"
TRANSITIONS_PNG = "transitions.png"



@pydantic_dataclass(frozen=True, config=STRICT)
class CompareOptions:
    """Every option of :func:`compare` (CLI flags and YAML keys are these names).

    Attributes
    ----------
    classes
        Land-cover class codes (list) or code -> name (mapping); codes found in the maps but not
        declared are an error. None: the codes the maps hold.
    class_field
        Class field of land-cover polygons (both dates).
    class_field_after
        Class field of the date-2 polygons when it is named differently.
    reference_kind, reference_field
        As in :class:`deltacd.evaluate.evaluate.EvaluateOptions`.
    all_touched
        Rasterise polygons with the all-touched rule instead of the pixel-centre rule.
    block_size, read_size, n_boot, seed
        Bootstrap blocks (px), read windows (px, multiple of block_size), replicates, seed.
    ignore_value
        Value of unlabelled pixels in rasters without a nodata tag.
    min_area_m2
        Agreement polygons smaller than this are left out of agreement.gpkg (the raster keeps them).
    figures
        Write agreement.png and transitions.png.
    """

    classes: list[int] | dict[int, str] | None = None
    class_field: str | None = None
    class_field_after: str | None = None
    reference_kind: Literal["auto", "raster", "polygons"] = "auto"
    reference_field: str | None = None
    all_touched: bool = False
    block_size: PositiveInt = 256
    read_size: PositiveInt | None = None
    n_boot: Annotated[int, Field(ge=2)] = 1000
    seed: int = 0
    ignore_value: int | None = 255
    min_area_m2: NonNegativeFloat = 0.0
    figures: bool = True


@dataclass(frozen=True, eq=False)
class ComparisonResult:
    """What :func:`compare` measured, and where it wrote it.

    Attributes
    ----------
    out_dir : Path
    summary : dict
        The content of ``compare.json``.
    agreement_pixels : numpy.ndarray of int64 ``[4]``
        Pixels of agreement codes 0..3.
    class_codes, class_names : tuple
        Land-cover classes, in the order of the matrices.
    transitions : numpy.ndarray of int64 ``[n, n]``
        Pixels per (class at date 1, class at date 2).
    transitions_ours : numpy.ndarray of int64 ``[n, n]``
        Of those, pixels our map calls change.
    ours_vs_pcc : ConfusionMatrix
        Rows = PCC, columns = ours (kappa = agreement of the two beyond chance).
    ours_vs_reference, pcc_vs_reference : ConfusionMatrix or None
        With a reference.
    """

    out_dir: Path
    summary: dict[str, Any]
    agreement_pixels: np.ndarray
    class_codes: tuple[int, ...]
    class_names: tuple[str, ...]
    transitions: np.ndarray
    transitions_ours: np.ndarray
    ours_vs_pcc: ConfusionMatrix
    ours_vs_reference: ConfusionMatrix | None = None
    pcc_vs_reference: ConfusionMatrix | None = None

    @property
    def agreement(self) -> Path:
        return self.out_dir / AGREEMENT_TIF

    @property
    def agreement_polygons(self) -> Path:
        return self.out_dir / AGREEMENT_GPKG

    @property
    def transitions_csv(self) -> Path:
        return self.out_dir / TRANSITIONS_CSV


def _text_classes(path: Path, field: str) -> list[str] | None:
    """The text values of a polygon class field (None when it is numeric or absent)."""
    try:
        frame = gpd.read_file(path, columns=[field], ignore_geometry=True, layer=spatial_layer(Path(path)))
    except Exception:  # unreadable files are reported by PolygonLabels with a better message
        return None
    if field not in frame.columns or pd.api.types.is_numeric_dtype(frame[field]) or pd.api.types.is_bool_dtype(frame[field]):
        return None
    return sorted(set(frame[field].dropna().astype(str)))


def _is_vector(path: Path) -> bool:
    from deltacd.evaluate.reference import VECTOR_SUFFIXES

    return path.suffix.lower() in VECTOR_SUFFIXES


def _landcover_names(
    before: Path, after: Path, field_before: str | None, field_after: str | None, declared: tuple[tuple[int, ...], tuple[str, ...]] | None
) -> Mapping[str, int] | None:
    """One text -> code mapping for both dates when their class fields hold text."""
    texts: set[str] = set()
    any_text = False
    for path, fld in ((before, field_before), (after, field_after)):
        if fld is not None and _is_vector(path):
            t = _text_classes(path, fld)
            if t is not None:
                any_text = True
                texts.update(t)
    if not any_text:
        return None
    if declared is not None:
        return {name: code for code, name in zip(*declared, strict=True)}
    return {name: i + 1 for i, name in enumerate(sorted(texts))}


def compare(
    ours: str | Path,
    landcover_before: str | Path,
    landcover_after: str | Path,
    out_dir: str | Path,
    *,
    reference: str | Path | None = None,
    classes: Sequence[int] | Mapping[int, str] | None = None,
    class_field: str | None = None,
    class_field_after: str | None = None,
    reference_kind: Literal["auto", "raster", "polygons"] = "auto",
    reference_field: str | None = None,
    all_touched: bool = False,
    block_size: int = 256,
    read_size: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ignore_value: int | None = 255,
    min_area_m2: float = 0.0,
    figures: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ComparisonResult:
    """Compare our change mask with the post-classification comparison of two land-cover maps.

    Parameters
    ----------
    ours
        Our change mask (``change_mask.tif``: 1 change, 0 no change, 255 nodata; or any 0/1 or
        0/255 raster). Its grid is the comparison grid.
    landcover_before, landcover_after
        Land-cover maps at both dates: rasters of class codes (warped onto our grid with nearest
        resampling when on another grid) or polygons with ``class_field`` (integer codes or text
        classes; text classes get codes 1, 2, ... in sorted order unless ``classes`` maps codes to
        the names).
    out_dir
        Output folder; must not exist unless ``overwrite``. Receives ``agreement.tif``,
        ``agreement.gpkg``, ``compare.json``, ``transitions.csv``, ``agreement.png`` and
        ``transitions.png``.
    reference
        Optional change reference (as in :func:`deltacd.evaluate.evaluate.evaluate`): both
        methods are scored against it on the same pixels.
    classes, class_field, class_field_after, reference_kind, reference_field, all_touched,
    block_size, read_size, n_boot, seed, ignore_value, min_area_m2, figures
        See :class:`CompareOptions`.
    overwrite
        Replace an existing ``out_dir`` once the new one is complete.
    progress
        ``progress(done, total)`` over the windows of the main pass.

    Returns
    -------
    ComparisonResult

    Raises
    ------
    InputError
        Unreadable or non-overlapping inputs (both files named), polygons without a class field,
        land-cover codes not among the declared classes (listed); nothing is written.
    OutputError
        ``out_dir`` exists and ``overwrite`` is False.
    """
    opts = build_options(
        CompareOptions,
        dict(
            classes=classes, class_field=class_field, class_field_after=class_field_after, reference_kind=reference_kind,
            reference_field=reference_field, all_touched=all_touched, block_size=block_size, read_size=read_size,
            n_boot=n_boot, seed=seed, ignore_value=ignore_value, min_area_m2=min_area_m2, figures=figures,
        ),
        source="compare options",
    )
    ours, out_dir = Path(ours), Path(out_dir)
    lc_paths = (Path(landcover_before), Path(landcover_after))
    inputs = input_paths(ours, *lc_paths, reference)
    check_output(out_dir, overwrite=overwrite, inputs=inputs)
    declared = normalise_classes(opts.classes)
    bs = opts.block_size
    rs = window_side(bs, opts.read_size)
    fields = (opts.class_field, opts.class_field_after or opts.class_field)
    for path, fld, label in zip(lc_paths, fields, ("before", "after"), strict=True):
        if _is_vector(path) and fld is None:
            raise InputError(f"{path}: land-cover polygons ({label}) need class_field= (the field holding each polygon's class)")
    names_map = _landcover_names(*lc_paths, *fields, declared)

    grid = open_prediction_grid(ours, what="change map (ours)")
    windows = read_windows(grid, rs)
    with ExitStack() as stack:
        mine = stack.enter_context(RasterLabels(ours, grid, what="change map (ours)", grid_name=str(ours)))
        lcs = [
            stack.enter_context(
                open_labels(path, grid, what=f"land-cover map ({label})", grid_name=str(ours),
                            field=fld if _is_vector(path) else None, all_touched=opts.all_touched, names=names_map)
            )
            for path, fld, label in zip(lc_paths, fields, ("before", "after"), strict=True)
        ]
        ref = None
        if reference is not None:
            ref = stack.enter_context(
                open_labels(reference, grid, what="reference", grid_name=str(ours), kind=opts.reference_kind,
                            field=opts.reference_field, all_touched=opts.all_touched)
            )

        ours_coding = binary_coding(scan_values(mine, windows), ignore_value=opts.ignore_value, where=f"{ours} (our change map)")
        lc_counts = [scan_values(src, windows) for src in lcs]
        lc_coding = _landcover_coding(lc_counts, lcs, lc_paths, declared, opts.ignore_value, names_map)
        ref_coding = None
        if ref is not None:
            ref_coding = binary_coding(scan_values(ref, windows), ignore_value=opts.ignore_value, where=f"{reference} (reference)")
        n = lc_coding.n_classes

        agree = np.zeros((1, n, n, N_CODES), dtype=np.int64)
        trans_ref = np.zeros(n * n, dtype=np.int64)
        trans_labelled = np.zeros(n * n, dtype=np.int64)
        blocks_ours: list[np.ndarray] = []
        blocks_pcc: list[np.ndarray] = []
        with staged_output(out_dir, overwrite=overwrite, kind="compare", inputs=inputs) as staging:
            with RasterWriter(
                staging / AGREEMENT_TIF, grid, dtype="uint8", nodata=AGREEMENT_NODATA, overview_resampling="nearest",
                description="0 neither, 1 only ours, 2 only PCC, 3 both",
            ) as writer:
                for done, window in enumerate(windows, start=1):
                    o, ov = ours_coding.apply(*mine.read(window))
                    b, bv = lc_coding.apply(*lcs[0].read(window))
                    a, av = lc_coding.apply(*lcs[1].read(window))
                    both = ov & bv & av
                    pcc = (b != a).astype(np.uint8)
                    code = agreement_code(o, pcc)
                    writer.write(window, np.where(both, code, AGREEMENT_NODATA).astype(np.uint8))
                    agree += count_agreement(code, both, before=b, after=a, n_classes=n)
                    if ref is not None:
                        key = b.astype(np.intp) * n + a.astype(np.intp)
                        r, rv = ref_coding.apply(*ref.read(window))
                        v = both & rv
                        trans_labelled += np.bincount(key[v], minlength=n * n)
                        trans_ref += np.bincount(key[v & (r == 1)], minlength=n * n)
                        blocks_ours.append(block_confusion_matrices(o, r, block_size=bs, valid=v))
                        blocks_pcc.append(block_confusion_matrices(pcc, r, block_size=bs, valid=v))
                    if progress is not None:
                        progress(done, len(windows))
                agreement_px = agree[0].sum(axis=(0, 1))  # pixels per agreement code
                trans = agree[0].sum(axis=2).ravel()  # pixels per transition (from * n + to)
                trans_ours = (agree[0][..., 1] + agree[0][..., 3]).ravel()  # of those, our change
                if agreement_px.sum() == 0:
                    raise InputError(
                        f"{ours}, {lc_paths[0]} and {lc_paths[1]}: no pixel has data in all three; check their extents and nodata"
                    )
                polygons = _agreement_polygons(writer.read, grid, opts.min_area_m2)
                writer.finish()
            write_layer(polygons, staging / AGREEMENT_GPKG, "agreement")
            write_styles(staging, {AGREEMENT_TIF: lambda _: PCC_AGREEMENT_STYLE},
                         {(AGREEMENT_GPKG, "agreement"): categorized_qml("agreement", {k: v for k, v in PCC_AGREEMENT.items() if k})})

            ha = grid.pixel_area_m2 / 1e4
            ours_vs_pcc = ConfusionMatrix(2, counts=[[agreement_px[0], agreement_px[1]], [agreement_px[2], agreement_px[3]]])
            cm_ours = cm_pcc = None
            ref_out = None
            if ref is not None:
                bo = np.concatenate(blocks_ours) if blocks_ours else np.zeros((0, 2, 2), np.int64)
                bp = np.concatenate(blocks_pcc) if blocks_pcc else np.zeros((0, 2, 2), np.int64)
                cm_ours = ConfusionMatrix(2, counts=bo.sum(axis=0))
                cm_pcc = ConfusionMatrix(2, counts=bp.sum(axis=0))
                if cm_ours.n_pixels == 0:
                    raise InputError(f"{reference}: no reference pixel where all maps have data; check its extent and nodata")
                ref_out = {
                    "path": str(reference),
                    "coding": ref_coding.description,
                    "pixels": cm_ours.n_pixels,
                    "ours": _scored(cm_ours, bo, opts),
                    "pcc": _scored(cm_pcc, bp, opts),
                }
            transitions = _transition_rows(trans, trans_ours, trans_ref if ref is not None else None,
                                           trans_labelled if ref is not None else None, lc_coding, ha)
            total = int(agreement_px.sum())
            summary = {
                "deltacd_version": __version__,
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "inputs": {
                    "ours": {"path": str(ours), "coding": ours_coding.description},
                    "landcover_before": lcs[0].describe(),
                    "landcover_after": lcs[1].describe(),
                    "reference": None if ref is None else ref.describe(),
                },
                "grid": grid.describe() | {"pixel_area_m2": grid.pixel_area_m2},
                "options": asdict(opts),
                "classes": {"codes": list(lc_coding.codes), "names": list(lc_coding.names)},
                "pixels_compared": total,
                "area_compared_ha": total * ha,
                "agreement": {
                    name: {"code": code, "pixels": int(agreement_px[code]), "area_ha": float(agreement_px[code] * ha),
                           "share": float(agreement_px[code] / total)}
                    for code, name in AGREEMENT_CODES.items()
                },
                "change_area_ha": {"ours": float((agreement_px[1] + agreement_px[3]) * ha),
                                   "pcc": float((agreement_px[2] + agreement_px[3]) * ha)},
                "ours_vs_pcc": {
                    "kappa": ours_vs_pcc.kappa,
                    "overall_agreement": ours_vs_pcc.overall_accuracy,
                    "change_jaccard": ours_vs_pcc.iou,
                    "share_of_ours_also_pcc": ours_vs_pcc.precision,
                    "share_of_pcc_also_ours": ours_vs_pcc.recall,
                    "note": "ours as prediction, PCC as reference: precision = share of our change that PCC also maps",
                },
                "reference": ref_out,
                "transitions": transitions,
                "agreement_polygons": int(len(polygons)),
            }
            summary = to_json_value(summary)
            write_json(staging / COMPARE_JSON, summary)
            _write_transitions(staging / TRANSITIONS_CSV, transitions)
            if opts.figures:
                from deltacd.report import figures as fig

                shares = [summary["agreement"][name]["share"] for name in AGREEMENT_CODES.values()]
                fig.agreement_figure(staging / AGREEMENT_TIF, staging / AGREEMENT_PNG, names=("ours", "PCC"), shares=shares)
                fig.transition_matrix_figure(trans.reshape(n, n) * ha, lc_coding.names, staging / TRANSITIONS_PNG)
    log.info("comparison written to %s", out_dir)
    return ComparisonResult(
        out_dir=out_dir, summary=summary, agreement_pixels=agreement_px, class_codes=lc_coding.codes,
        class_names=lc_coding.names, transitions=trans.reshape(n, n), transitions_ours=trans_ours.reshape(n, n),
        ours_vs_pcc=ours_vs_pcc, ours_vs_reference=cm_ours, pcc_vs_reference=cm_pcc,
    )


def _landcover_coding(
    counts: Sequence[Mapping[Any, int]],
    sources: Sequence[LabelSource],
    paths: Sequence[Path],
    declared: tuple[tuple[int, ...], tuple[str, ...]] | None,
    ignore_value: int | None,
    names_map: Mapping[str, int] | None,
) -> LabelCoding:
    """One coding for both land-cover maps: the declared classes, or the union of the codes they hold."""
    if declared is not None:
        for c, path in zip(counts, paths, strict=True):
            class_coding(c, declared, ignore_value=ignore_value, where=f"{path} (land-cover map)")  # raises on unknown codes
        return LabelCoding(declared[0], declared[1], "declared classes")
    present: set[int] = set()
    ignore = set() if ignore_value is None else {ignore_value}
    for c, path, src in zip(counts, paths, sources, strict=True):
        values = {v for v, k in c.items() if k}
        if not all(float(v).is_integer() for v in values):
            raise InputError(f"{path}: land-cover map holds non-integer values; give integer class codes")
        values = {int(v) for v in values} - (ignore if isinstance(src, RasterLabels) else set())
        if not values:
            raise InputError(f"{path}: land-cover map holds no labelled pixel; check its nodata value and extent")
        present |= values
    codes = tuple(sorted(present))
    text = {code: name for name, code in (names_map or {}).items()}
    return LabelCoding(codes, tuple(text.get(c, str(c)) for c in codes), "class codes found in the maps")


def _scored(cm: ConfusionMatrix, blocks: np.ndarray, opts: CompareOptions) -> dict[str, Any]:
    out = cm.scores_dict()
    ci: dict[str, Any] = {}
    if blocks.shape[0] >= 2:
        for metric in ("f1", "kappa"):
            c: BootstrapCI = block_bootstrap_ci_from_blocks(blocks, n_boot=opts.n_boot, seed=opts.seed, metric=metric,
                                                            block_size=opts.block_size)
            ci[metric] = c.to_dict()
    return out | {"ci": ci}


def _agreement_polygons(read: Callable[[Window], np.ndarray], grid: Grid, min_area_m2: float) -> gpd.GeoDataFrame:
    """Polygons of agreement codes 1, 2 and 3, merged across blocks (code 0 is the background)."""
    frames = []
    for code in (1, 2, 3):

        def as_score(window: Window, code: int = code) -> np.ndarray:
            return (read(window) == code).astype(np.float32)

        polys = vectorise_changes(as_score, grid, 0.5, CleanUp(min_area_m2=min_area_m2))
        if len(polys):
            frames.append(gpd.GeoDataFrame(
                {"agreement": code, "meaning": AGREEMENT_CODES[code], "area_m2": polys["area_m2"], "pixels": polys["pixels"]},
                geometry=polys.geometry.values, crs=grid.crs,
            ))
    if not frames:
        return gpd.GeoDataFrame({"agreement": [], "meaning": [], "area_m2": [], "pixels": []}, geometry=[], crs=grid.crs)
    out = pd.concat(frames, ignore_index=True)
    out["agreement"] = out["agreement"].astype("int32")
    return gpd.GeoDataFrame(out, geometry="geometry", crs=grid.crs)


def _transition_rows(
    trans: np.ndarray, ours: np.ndarray, ref: np.ndarray | None, labelled: np.ndarray | None, coding: LabelCoding, ha: float
) -> list[dict[str, Any]]:
    n = coding.n_classes
    rows = []
    for i in range(n):
        for j in range(n):
            k = i * n + j
            if trans[k] == 0:
                continue
            row: dict[str, Any] = {
                "from_code": coding.codes[i], "from_name": coding.names[i],
                "to_code": coding.codes[j], "to_name": coding.names[j],
                "changed": i != j,
                "pixels": int(trans[k]),
                "area_ha": float(trans[k] * ha),
                "ours_change_ha": float(ours[k] * ha),
                "ours_share": float(ours[k] / trans[k]),
            }
            if ref is not None:
                row["reference_labelled_ha"] = float(labelled[k] * ha)
                row["reference_change_ha"] = float(ref[k] * ha)
                row["reference_change_share"] = float(ref[k] / labelled[k]) if labelled[k] else math.nan
            rows.append(row)
    rows.sort(key=lambda r: (not r["changed"], -r["area_ha"]))
    return rows


def _write_transitions(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = ["from_code", "from_name", "to_code", "to_name", "changed", "pixels", "area_ha", "ours_change_ha", "ours_share"]
    if rows and "reference_change_ha" in rows[0]:
        fields += ["reference_labelled_ha", "reference_change_ha", "reference_change_share"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()})
