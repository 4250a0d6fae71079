"""Image files of the plain-image sources: metadata, whole-image reads (GDAL, Pillow as a fallback), label values.

PNG, JPEG and other plain images are read whole (they cannot be read by window cheaply); alpha
bands are dropped and GDAL's mask (nodata, alpha, mask band) gives the valid pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import default_names

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageInfo",
    "check_bands",
    "find_image",
    "image_info",
    "images_by_stem",
    "label_encoding",
    "read_image",
    "read_label_image",
]

#: Image formats looked for in a chips folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".jp2", ".gif", ".webp")


@dataclass(frozen=True)
class ImageInfo:
    """Metadata of one image file; ``indexes`` are the 1-based bands kept (alpha bands dropped)."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    names: tuple[str, ...]
    indexes: tuple[int, ...] | None  # None: read with Pillow
    nodata: float | None = None
    crs: CRS | None = None
    transform: Affine | None = None


def images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by file stem (two images of one stem are an error)."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in found:
                raise InputError(f"{folder}: {found[p.stem].name} and {p.name} share the name {p.stem}; keep one image per name")
            found[p.stem] = p
    return found


def image_info(path: Path) -> ImageInfo:
    """Metadata of an image file (GDAL; Pillow for what GDAL cannot read); alpha bands dropped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                keep = tuple(i + 1 for i, c in enumerate(ds.colorinterp) if c != ColorInterp.alpha) or (1,)
                interp = [ds.colorinterp[i - 1].name for i in keep]
                desc = [ds.descriptions[i - 1] for i in keep]
                georef = ds.crs is not None and not ds.transform.is_identity
                return ImageInfo(
                    path, ds.width, ds.height, len(keep), ds.dtypes[0], default_names(len(keep), interp, desc), keep,
                    nodata=ds.nodata, crs=CRS.from_user_input(ds.crs) if georef else None,
                    transform=ds.transform if georef else None,
                )
    except RasterioIOError:
        pass
    array = _pillow_read(path)
    count = array.shape[0]
    names = default_names(count, ["red", "green", "blue"][:count] if count >= 3 else ["gray"] * count, [None] * count)
    return ImageInfo(path, array.shape[2], array.shape[1], count, str(array.dtype), names, None)


def _pillow_read(path: Path) -> np.ndarray:
    try:
        from PIL import Image

        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA"):
                image = image.convert(image.mode[:-1])
            array = np.asarray(image)
    except Exception as exc:  # Pillow raises several types for unreadable files
        raise InputError(f"{path}: not an image GDAL or Pillow can read ({exc}); convert it to PNG or GeoTIFF") from exc
    return np.ascontiguousarray(array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0))


def read_image(info: ImageInfo) -> tuple[np.ndarray, np.ndarray]:
    """[C, H, W] in the file's type and bool [H, W] validity (GDAL's mask: nodata, alpha, mask band)."""
    if info.indexes is None:
        array = _pillow_read(info.path)
        return array, np.ones(array.shape[1:], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(info.path) as ds:
            return ds.read(list(info.indexes)), ds.dataset_mask() > 0


def read_label_image(info: ImageInfo) -> np.ndarray:
    """The single band of a label image ([H, W]); a multi-band label must repeat one band."""
    array, _ = read_image(info)
    if array.shape[0] > 1 and not all(np.array_equal(array[0], b) for b in array[1:]):
        raise InputError(f"{info.path}: label with {array.shape[0]} different bands; give a single-band mask (0/1 or 0/255)")
    return array[0]



def find_image(folder: Path, stem: str) -> Path:
    """The image ``<stem>.<suffix>`` of ``folder`` in any of :data:`IMAGE_SUFFIXES`."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise MissingInputError(f"{folder}: no image {stem}.png (or .tif, .jpg); every xBD label needs its pre and post image")


def label_encoding(values: set[int], folder: Path) -> str:
    """How a source's label values read: ``0/1``, ``0/255`` or ``0/1, 255 unlabelled``."""
    if values <= {0, 1}:
        return "0/1"
    if values <= {0, 255}:
        return "0/255"
    if values <= {0, 1, 255}:
        return "0/1, 255 unlabelled"
    raise InputError(
        f"{folder}: label values {sorted(values)[:10]} found; expected 0/1 or 0/255 (change = 1 or 255), "
        "or 0/1 with 255 = unlabelled; recode the labels"
    )


def check_bands(info: ImageInfo, declared: tuple[str, ...] | None, first: tuple[tuple[str, ...], str] | None,
                name: str) -> tuple[tuple[str, ...], str]:
    """Band names and data type of a source's images, checked image by image.

    ``declared`` (the source's ``bands``) or the image's own names must give one name per band, and
    match ``first`` (the names and type of the source's first image; None for the first image).
    Returns ``first``, or this image's names and type for the first image.
    """
    names = declared or info.names
    if len(names) != info.count:
        raise InputError(f"{info.path}: has {info.count} band(s) but bands of source {name} is {','.join(names)}; "
                         "declare one name per band")
    if first is None:
        return names, info.dtype
    if names != first[0] or info.dtype != first[1]:
        raise InputError(
            f"{info.path}: bands {','.join(names)} ({info.dtype}) differ from the source's first image "
            f"({','.join(first[0])}, {first[1]}); a source's images must share bands and data type"
        )
    return first
