"""Pléiades and SPOT 6/7 products as delivered: DIMAP v2 (``DIM_*.XML``, ``RPC_*.XML``, ``IMG_*``).

A delivery folder holds, per product, ``DIM_<id>.XML`` (the product: its raster files, size,
bands), ``RPC_<id>.XML`` (the rational function model) and the image tiles ``IMG_<id>_R1C1.JP2``
... GDAL's DIMAP driver opens ``DIM_*.XML`` itself (tiles mosaicked, RPCs read from the RPC file
it names); this module adds what GDAL leaves out:

- finding the product in a folder (GDAL opens a folder only when it holds ``VOL_PHR.XML``);
- the band order: GDAL names no Pléiades band. The file order is the ``Band_Display_Order``
  (``RED_CHANNEL`` ``GREEN_CHANNEL`` ``BLUE_CHANNEL`` ``ALPHA_CHANNEL``), as OSSIM/OTB read it:
  ``B2 B1 B0 B3`` for a multispectral primary product, i.e. red, green, blue, near infrared
  (band identities: ``B0`` blue, ``B1`` green, ``B2`` red, ``B3`` NIR, ``P`` panchromatic);
- reading ``RPC_*.XML`` directly (:func:`read_rpc_xml`), for a raster that is not opened
  through its ``DIM_*.XML``.

RPC convention: DIMAP v2 counts pixels from 1 (the centre of the first pixel is (1, 1)); GDAL,
OSSIM and the NITF RPC00B convention count from 0, so ``SAMP_OFF`` and ``LINE_OFF`` lose 1
(DIMAP v3, Pléiades Neo, states its first pixel in ``ImagetoGround_Validity_Domain``). The
ground-to-image coefficients are the ``Inverse_Model`` (v2) or ``GroundtoImage_Values`` (v3).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from rasterio.rpc import RPC

from deltacd.errors import InputError

#: Band identifiers of Pléiades, Pléiades Neo and SPOT 6/7 products, as deltacd band names.
BAND_IDS = {"B0": "B", "B1": "G", "B2": "R", "B3": "N", "P": "PAN", "PAN": "PAN",
            "R": "R", "G": "G", "B": "B", "NIR": "N", "RE": "RE", "DB": "DB"}

_IMAGE_SUFFIXES = {".tif", ".tiff", ".jp2", ".img", ".vrt"}
_CHANNELS = ("RED_CHANNEL", "GREEN_CHANNEL", "BLUE_CHANNEL", "ALPHA_CHANNEL")
_SCALARS = ("LINE_OFF", "SAMP_OFF", "LAT_OFF", "LONG_OFF", "HEIGHT_OFF",
            "LINE_SCALE", "SAMP_SCALE", "LAT_SCALE", "LONG_SCALE", "HEIGHT_SCALE")
_COEFFS = ("LINE_NUM_COEFF", "LINE_DEN_COEFF", "SAMP_NUM_COEFF", "SAMP_DEN_COEFF")


@dataclass(frozen=True)
class DimapProduct:
    """What a ``DIM_*.XML`` says: its rasters, size, bands in file order, and RPC file."""

    path: Path
    rasters: tuple[Path, ...]
    size: tuple[int, int] | None  # (columns, rows)
    count: int | None
    bands: tuple[str, ...] | None  # band identifiers in file order (``B2 B1 B0 B3``, ``P``)
    rpc: Path | None  # the product's RPC_*.XML, when it exists


def is_dim(path: Path) -> bool:
    return path.suffix.lower() == ".xml" and path.name.upper().startswith("DIM_")


def is_rpc_xml(path: Path) -> bool:
    return path.suffix.lower() == ".xml" and path.name.upper().startswith("RPC_")


def find_product(path: Path) -> Path | None:
    """The ``DIM_*.XML`` that ``path`` designates (the file itself, the one in a folder, or, in a
    folder without images, the one in its subfolders), or None when ``path`` is not a DIMAP product.

    Raises
    ------
    InputError
        The folder holds several products, or ``path`` is an ``RPC_*.XML`` (not an image).
    """
    if path.is_file():
        if is_rpc_xml(path):
            dims = [p.name for p in _dims_in(path.parent)]
            hint = f"give {dims[0]} (the product) or the image itself" if len(dims) == 1 else \
                "give the product's DIM_*.XML or the image itself"
            raise InputError(f"{path}: is the RPC model of a DIMAP product, not an image; {hint}")
        return path if is_dim(path) else None
    if not path.is_dir():
        return None
    dims = _dims_in(path)
    if not dims and not any(p.suffix.lower() in _IMAGE_SUFFIXES for p in path.iterdir()):
        # A delivery folder (VOL_PHR.XML, one subfolder per product), not a folder of images.
        dims = [d for sub in sorted(path.iterdir()) if sub.is_dir() for d in _dims_in(sub)]
    if len(dims) > 1:
        listed = ", ".join(f"{d.relative_to(path)} ({_describe(d)})" for d in dims)
        raise InputError(f"{path}: holds {len(dims)} DIMAP products ({listed}); give one DIM_*.XML (or its folder)")
    return dims[0] if dims else None


def products_beside(raster: Path) -> list[Path]:
    """``DIM_*.XML`` files in the raster's folder."""
    return _dims_in(raster.parent)


def rpc_files_beside(raster: Path) -> list[Path]:
    """``RPC_*.XML`` files in the raster's folder."""
    return sorted(p for p in raster.parent.iterdir() if p.is_file() and is_rpc_xml(p))


def product_naming(raster: Path) -> DimapProduct | None:
    """The product beside ``raster`` whose ``DIM_*.XML`` lists it among its raster files."""
    for dim in products_beside(raster):
        try:
            product = read_product(dim)
        except InputError:
            continue
        if any(r.name == raster.name for r in product.rasters):
            return product
    return None


def read_product(dim: Path) -> DimapProduct:
    """Parse a ``DIM_*.XML``.

    Raises
    ------
    InputError
        The file is not a DIMAP document.
    """
    root = _parse(dim)
    if _local(root.tag) not in ("Dimap_Document", "PHR_DIMAP_Document"):
        raise InputError(f"{dim}: not a DIMAP document (root <{_local(root.tag)}>); give the product's DIM_*.XML")
    rasters = tuple(dim.parent / href for href in _hrefs(root, "Data_File", "DATA_FILE_PATH"))
    dims = _first(root, "Raster_Dimensions")
    size = count = None
    if dims is not None:
        cols, rows, nb = (_int(_text(dims, tag)) for tag in ("NCOLS", "NROWS", "NBANDS"))
        size = (cols, rows) if cols and rows else None
        count = nb
    return DimapProduct(dim, rasters, size, count, _band_order(root, count), _rpc_file(root, dim))


def read_rpc_xml(path: Path) -> RPC:
    """The RPCs of a DIMAP ``RPC_*.XML`` (v2 ``Global_RFM``, or v3), in GDAL's zero-based convention.

    Raises
    ------
    InputError
        A field is missing or not a number.
    """
    root = _parse(path)
    model = _first(root, "Inverse_Model")
    if model is None:
        model = _first(root, "GroundtoImage_Values")
    if model is None:
        raise InputError(f"{path}: no Inverse_Model or GroundtoImage_Values (ground-to-image RPCs); "
                         "give the product's RPC_*.XML")
    try:
        scalars = {tag.lower(): float(_required(root, tag)) for tag in _SCALARS}
        coeffs = {tag.lower(): [float(_required(model, f"{tag}_{i}")) for i in range(1, 21)] for tag in _COEFFS}
    except ValueError as exc:
        raise InputError(f"{path}: missing or bad RPC field ({exc}); give the product's RPC_*.XML as delivered") from exc
    first_row, first_col = 1.0, 1.0  # DIMAP v2: the first pixel's centre is (1, 1)
    validity = _first(root, "ImagetoGround_Validity_Domain")
    if validity is not None:  # DIMAP v3 states it
        first_row = float(_text(validity, "FIRST_ROW") or _text(validity, "FIRST_COL") or 1.0)
        first_col = float(_text(validity, "FIRST_COL") or first_row)
    scalars["line_off"] -= first_row
    scalars["samp_off"] -= first_col
    return RPC(**scalars, **coeffs)


def band_names(ids: tuple[str, ...]) -> tuple[str, ...]:
    """deltacd band names of product band identifiers (``B2 B1 B0 B3`` -> ``R G B N``)."""
    return tuple(BAND_IDS.get(i.upper(), i.upper()) for i in ids)


def _band_order(root: ET.Element, count: int | None) -> tuple[str, ...] | None:
    """Band identifiers in file order: the ``Band_Display_Order`` channels (as OSSIM/OTB read them).

    Not the ``Band_Measurement_List``: it lists the bands ``B0 B1 B2 B3`` whatever their order in the
    file, so a product without a complete display order gets no names (declare them) rather than wrong ones.
    """
    display = _first(root, "Band_Display_Order")
    if display is not None:
        ids = tuple(t for t in (_text(display, c) for c in _CHANNELS) if t)
        if ids and len(set(ids)) == len(ids) and (count is None or len(ids) == count):
            return ids
    return ("P",) if count == 1 else None


def _rpc_file(root: ET.Element, dim: Path) -> Path | None:
    for component in root.iter():
        if _local(component.tag) == "Component" and (_text(component, "COMPONENT_TITLE") or "").strip() == "RPC Model":
            hrefs = _hrefs(component, "COMPONENT_PATH", "COMPONENT_PATH")
            if hrefs and (dim.parent / hrefs[0]).is_file():
                return dim.parent / hrefs[0]
    guess = dim.parent / ("RPC_" + dim.name[4:])
    return guess if guess.is_file() else None


def _describe(dim: Path) -> str:
    try:
        product = read_product(dim)
    except InputError:
        return "unreadable"
    bands = " ".join(product.bands) if product.bands else f"{product.count} bands"
    return bands


def _dims_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dim(p))


def _parse(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"{path}: not readable XML ({exc}); give the product's DIMAP file as delivered") from exc


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _first(root: ET.Element, name: str) -> ET.Element | None:
    return next((e for e in root.iter() if _local(e.tag) == name), None)


def _text(parent: ET.Element, name: str) -> str | None:
    element = _first(parent, name)
    text = element.text.strip() if element is not None and element.text else None
    return text or None


def _required(parent: ET.Element, name: str) -> str:
    text = _text(parent, name)
    if text is None:
        raise ValueError(f"no {name}")
    return text


def _hrefs(root: ET.Element, parent: str, child: str) -> list[str]:
    found = []
    for element in root.iter():
        if _local(element.tag) == parent:
            target = element if parent == child else _first(element, child)
            href = target.get("href") if target is not None else None
            if href:
                found.append(href)
    return found


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
