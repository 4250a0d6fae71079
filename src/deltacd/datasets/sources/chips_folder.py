"""``chips`` sources: a folder in the A/B/label layout of LEVIR-CD, DSIFN-CD, WHU-CD, CDD.

``A/x.png``, ``B/x.png``, ``label/x.png`` (the three folder names are settings). Any format GDAL
reads, Pillow as a fallback. Label values are detected once per source, over all its label files:
values in {0, 1} are kept, values in {0, 255} become 0/1 (255 = change), values in {0, 1, 255}
are read as 0/1 with 255 = unlabelled (ignored). Anything else is an error.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import numpy as np

from deltacd.datasets.sources.config import ChipsSource
from deltacd.datasets.sources.images import (
    IMAGE_SUFFIXES,
    ImageInfo,
    check_bands,
    image_info,
    images_by_stem,
    label_encoding,
    read_label_image,
)
from deltacd.datasets.sources.scenes import ImagePairScene, Labeller, OpenedSource, safe_name
from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import parse_bands

__all__ = ["open_chips"]


def open_chips(cfg: ChipsSource, index: int, ignore: int) -> OpenedSource:
    """Check a ``chips`` source (A/B/label folders, label values) and open its pairs as image scenes."""
    name = cfg.name or f"chips{index}"
    root = Path(cfg.path)
    if not root.is_dir():
        raise MissingInputError(
            f"{root}: no such folder (chips source {name}); "
            f"give a folder holding {cfg.before_dir}/, {cfg.after_dir}/ and {cfg.label_dir}/"
        )
    dirs = {}
    for role, sub in (("before", cfg.before_dir), ("after", cfg.after_dir), ("label", cfg.label_dir)):
        d = root / sub
        if not d.is_dir():
            raise MissingInputError(f"{d}: no such folder ({role} images of chips source {name}); set {role}_dir to the folder's name")
        dirs[role] = images_by_stem(d)
    stems = sorted(dirs["before"])
    if not stems:
        raise InputError(f"{root / cfg.before_dir}: no image ({', '.join(IMAGE_SUFFIXES)}); give the folder of the before images")
    if cfg.glob is not None:
        patterns = [cfg.glob] if isinstance(cfg.glob, str) else list(cfg.glob)
        stems = [s for s in stems if any(fnmatch.fnmatch(dirs["before"][s].name, p) or fnmatch.fnmatch(s, p) for p in patterns)]
        if not stems:
            raise InputError(
                f"{root / cfg.before_dir}: glob {cfg.glob!r} matches none of its {len(dirs['before'])} images; "
                f"fix the pattern"
            )

    declared = parse_bands(cfg.bands, setting=f"bands of source {name}") if cfg.bands else None
    triplets, first, values = [], None, set()
    for stem in stems:
        files = []
        for role in ("before", "after", "label"):
            path = dirs[role].get(stem)
            if path is None:
                raise MissingInputError(
                    f"{root / getattr(cfg, role + '_dir')}: no file {stem}.* for {dirs['before'][stem].name}; "
                    "every before image needs an after image and a label with the same name"
                )
            files.append(image_info(path))
        a, b, lab = files
        for other in (b, lab):
            if (other.height, other.width) != (a.height, a.width):
                raise InputError(
                    f"{other.path}: {other.width}x{other.height} px but {a.path} is {a.width}x{a.height}; "
                    "images and labels of a pair must have the same size"
                )
        if b.count != a.count or b.dtype != a.dtype:
            raise InputError(
                f"{b.path}: {b.count} band(s) of {b.dtype} but {a.path} has {a.count} of {a.dtype}; "
                f"give pairs of the same kind"
            )
        first = check_bands(a, declared, first, name)
        found = np.unique(read_label_image(lab))
        values |= {int(v) for v in found}
        triplets.append((stem, a, b, lab))

    encoding = label_encoding(values, root / cfg.label_dir)
    pattern = None
    if cfg.block_pattern is not None:
        try:
            pattern = re.compile(cfg.block_pattern)
        except re.error as exc:
            raise InputError(f"block_pattern of source {name}: {cfg.block_pattern!r} is not a regular expression ({exc}); fix it") from exc
    scenes = []
    for stem, a, b, lab in triplets:
        scene = ImagePairScene(safe_name(stem), a, b, _chips_labeller(lab, encoding, ignore))
        if pattern is not None:
            match = pattern.search(stem)
            if match is None or not match.groups():
                raise InputError(
                    f"block_pattern of source {name}: {cfg.block_pattern!r} does not match {stem!r} with a group; "
                    "give a pattern whose first (...) group names the block"
                )
            scene.block = safe_name(match.group(1))
        scenes.append(scene)
    crs = scenes[0].crs
    return OpenedSource(
        index, name, "chips", *first, triplets[0][1].nodata, scenes, image_blocks=True, forced_split=cfg.split,
        description={
            "paths": {"folder": str(root.resolve()), "glob": cfg.glob},
            "label_values": encoding,
            **({"crs": crs.to_string(), "res": abs(scenes[0].transform.a)} if crs is not None else {}),
        },
    )



def _chips_labeller(info: ImageInfo, encoding: str, ignore: int) -> Labeller:
    def labeller(shape: tuple[int, int], valid: np.ndarray) -> tuple[np.ndarray, dict]:
        raw = read_label_image(info)
        if encoding == "0/255":
            label = (raw == 255).astype(np.uint8)
        else:
            label = raw.astype(np.uint8)
            label[raw == 255] = ignore
        label[~valid] = ignore
        return label, {}

    return labeller
