"""``xbd`` sources: xBD pre/post PNG images and the post-disaster JSON labels.

Labels are rasterised by :func:`deltacd.datasets.xview2.rasterize_xbd_labels`. Label = damaged
building (minor, major or destroyed) versus everything else (background, no-damage and, by
default, un-classified, which xView2 counts as no-damage); the ``damage`` target keeps the xView2
classes 0 background, 1 no-damage, 2 minor, 3 major, 4 destroyed. Binary labels are symmetric
in time, but ``damage`` describes the post image only.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import numpy as np

from deltacd.datasets.sources.config import XbdSource
from deltacd.datasets.sources.images import ImageInfo, find_image, image_info
from deltacd.datasets.sources.scenes import ImagePairScene, OpenedSource, safe_name
from deltacd.datasets.xview2 import rasterize_xbd_labels
from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import parse_bands

__all__ = ["DAMAGE_CLASSES", "check_xbd_size", "open_xbd", "xbd_tile_ids"]

#: xView2 damage classes of the ``damage`` target.
DAMAGE_CLASSES = {0: "background", 1: "no-damage", 2: "minor-damage", 3: "major-damage", 4: "destroyed"}


def open_xbd(cfg: XbdSource, index: int, ignore: int) -> OpenedSource:
    """Check an ``xbd`` source and open its pre/post tiles with labels from the post-disaster JSON."""
    name = cfg.name or f"xbd{index}"
    root = Path(cfg.path)
    images, labels = root / "images", root / "labels"
    for d in (root, images, labels):
        if not d.is_dir():
            raise MissingInputError(
                f"{d}: no such folder (xbd source {name}); "
                f"give the folder holding images/ and labels/ (e.g. xbd/tier3)"
            )
    suffix = "_post_disaster.json"
    ids = xbd_tile_ids(labels, suffix, cfg.glob)
    declared = parse_bands(cfg.bands, setting=f"bands of source {name}") if cfg.bands else None
    scenes, band_names, dtype, nodata = [], None, None, None
    for tile in ids:
        pre = find_image(images, f"{tile}_pre_disaster")
        post = find_image(images, f"{tile}_post_disaster")
        a, b = image_info(pre), image_info(post)
        if (a.height, a.width, a.count) != (b.height, b.width, b.count):
            raise InputError(
                f"{post}: {b.width}x{b.height}x{b.count} but {pre} is {a.width}x{a.height}x{a.count}; "
                f"give a matching pre/post pair"
            )
        names = declared or a.names
        if len(names) != a.count:
            raise InputError(f"{pre}: has {a.count} band(s) but bands of source {name} is {','.join(names)}; declare one name per band")
        if band_names is None:
            band_names, dtype, nodata = names, a.dtype, a.nodata
        elif names != band_names or a.dtype != dtype:
            raise InputError(f"{pre}: bands {','.join(names)} ({a.dtype}) differ from {','.join(band_names)} ({dtype}) of the first tile")
        json_path = labels / f"{tile}{suffix}"

        def labeller(shape, valid, json_path=json_path):
            mode = "ignore" if cfg.unclassified == "ignore" else "no-damage"
            buildings, damage = rasterize_xbd_labels(json_path, shape=shape, unclassified=mode)
            label = np.isin(damage, (2, 3, 4)).astype(np.uint8)
            damage = damage.copy()
            unknown = ~valid
            if mode == "ignore":
                unknown |= (buildings > 0) & (damage == 0)  # un-classified building pixels
            label[unknown] = ignore
            damage[unknown] = ignore
            return label, {"damage": damage}

        check_xbd_size(json_path, a)
        scenes.append(ImagePairScene(safe_name(tile), a, b, labeller))
    return OpenedSource(
        index, name, "xbd", band_names, dtype, nodata, scenes, image_blocks=True, forced_split=cfg.split,
        targets=("damage",), target_classes={"damage": dict(DAMAGE_CLASSES)},
        description={"paths": {"folder": str(root.resolve()), "glob": cfg.glob}, "unclassified": cfg.unclassified},
    )


def xbd_tile_ids(labels: Path, suffix: str, glob: str | list[str] | None) -> list[str]:
    """Ids of the tiles with a ``<id><suffix>`` label in an xBD ``labels/`` folder (sorted), filtered by ``glob``."""
    ids = sorted(p.name[: -len(suffix)] for p in labels.glob(f"*{suffix}"))
    if glob is not None:
        patterns = [glob] if isinstance(glob, str) else list(glob)
        ids = [i for i in ids if any(fnmatch.fnmatch(i, p) for p in patterns)]
    if not ids:
        matching = f" matching {glob!r}" if glob else ""
        when = "pre" if suffix.startswith("_pre") else "post"
        raise InputError(f"{labels}: no *{suffix} label{matching}; give an xBD folder with {when}-disaster labels")
    return ids


def check_xbd_size(json_path: Path, image: ImageInfo) -> None:
    """Check that an xBD label file describes an image of ``image``'s size."""
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{json_path}: not readable JSON ({exc}); give an xBD label file") from exc
    w, h = meta.get("width"), meta.get("height")
    if w and h and (int(h), int(w)) != (image.height, image.width):
        raise InputError(f"{json_path}: labels for {w}x{h} px but {image.path} is {image.width}x{image.height}; give the matching image")

