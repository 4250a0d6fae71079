"""Where the RPCs of a sensor-geometry file come from, and the band names its product gives.

:func:`find_rpcs` looks, in order, at what GDAL read from the file (RPC tags, ``.RPB``,
``_RPC.TXT``; a DIMAP product's ``RPC_*.XML``), an OSSIM ``.geom`` sidecar, and the ``RPC_*.XML``
of a ``DIM_*.XML`` beside the file that lists it; its error names every place it looked.
RPCs from a product-level file describe the full product; :func:`shift_rpc` moves them to a crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS
from rasterio.rpc import RPC

from deltacd.errors import InputError
from deltacd.io import dimap
from deltacd.io.ossim import read_geom

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _FoundRPC:
    rpc: RPC
    origin: str  # where the RPCs were read, for the log
    whole_product: bool  # the RPCs describe the full product (a crop of it carries its offset)
    bands: tuple[str, ...] | None = None  # product band identifiers in file order, when the source gives them
    size: tuple[int, int] | None = None  # (samples, lines) of the image the RPCs describe, when known


def find_rpcs(
    path: Path, rpcs: RPC | None, read_with: list[str], product: dimap.DimapProduct | None, label: str,
    *, crs: CRS | None, transform: Affine,
) -> _FoundRPC:
    """The RPCs of a file without a usable geotransform, from the first source that has them.

    In order: what GDAL reads (RPC tags, ``.RPB``, ``_RPC.TXT``; the ``RPC_*.XML`` of a DIMAP product
    opened through its ``DIM_*.XML``, or of an ``IMG_*`` file beside it), an OSSIM ``.geom`` sidecar
    (``ossimRpcModel``, ``ossimPleiadesModel``), the ``RPC_*.XML`` of a ``DIM_*.XML`` beside the file
    that lists it. The error names every place looked at.
    """
    if product is not None:
        if rpcs is not None:  # GDAL's DIMAP driver read the product's RPC_*.XML
            origin = f"{product.rpc.name} (GDAL)" if product.rpc is not None else f"{path.name} (GDAL)"
            return _FoundRPC(rpcs, origin, True, product.bands, product.size)
        if product.rpc is not None:
            return _FoundRPC(dimap.read_rpc_xml(product.rpc), product.rpc.name, True, product.bands, product.size)
        raise InputError(
            f"{path}: DIMAP product without RPCs ({label} image): no RPC Model component in it and no "
            f"RPC_{path.name[4:]} beside it; copy the product's RPC_*.XML beside it, as delivered"
        )
    if rpcs is not None:
        beside = [name for name in read_with if dimap.is_rpc_xml(Path(name))]
        if beside:  # GDAL read the RPC_*.XML of a Pléiades IMG_* file: product-level RPCs
            owner = dimap.product_naming(path)
            return _FoundRPC(rpcs, f"{beside[0]} (GDAL)", True, owner.bands if owner else None)
        return _FoundRPC(rpcs, "the file's RPC metadata", False)
    looked = [f"none in {path.name} (RPC tags, {path.stem}.RPB, {path.stem}_RPC.TXT)"]
    geom_path = path.with_suffix(".geom")
    geom = read_geom(geom_path)
    if geom is not None and geom.rpc is not None:
        return _FoundRPC(geom.rpc, f"{geom_path.name} ({geom.model})", True, geom.bands, geom.size)
    looked.append(f"{geom_path.name} is an OSSIM {geom.model} without RPCs" if geom is not None else f"no {geom_path.name}")
    owner = dimap.product_naming(path)
    if owner is not None and owner.rpc is not None and len(owner.rasters) == 1:
        return _FoundRPC(dimap.read_rpc_xml(owner.rpc), f"{owner.rpc.name} of {owner.path.name}", True,
                         owner.bands, owner.size)
    rpc_files = dimap.rpc_files_beside(path)
    if owner is not None:
        looked.append(f"{owner.path.name} lists it as one of {len(owner.rasters)} tiles (open the DIM_*.XML instead)"
                      if len(owner.rasters) > 1 else f"{owner.path.name} lists it but has no RPC file")
    elif rpc_files:
        names = ", ".join(p.name for p in rpc_files[:3]) + (" ..." if len(rpc_files) > 3 else "")
        looked.append(f"{names} beside it, but no DIM_*.XML beside it lists {path.name}, so not taken")
    else:
        looked.append("no RPC_*.XML or DIM_*.XML beside it")
    if crs is not None:
        what = "a CRS but no geotransform"
    elif not transform.is_identity:
        what = "a geotransform but no CRS"
    else:
        what = "no CRS or geotransform"
    raise InputError(
        f"{path}: {what} and no RPCs ({label} image): {'; '.join(looked)}. Give the orthorectified image, the "
        "Pléiades DIM_*.XML, or the file with its .geom; or set its CRS and transform (rio edit-info --crs EPSG:... "
        "--transform ..., installed with deltacd)"
    )


def product_names(
    path: Path, ids: tuple[str, ...] | None, count: int, implied: tuple[str, ...]
) -> tuple[str, ...]:
    """Band names from the product metadata (DIMAP band order, ``.geom`` band list) when they fit the file."""
    if not ids:
        return implied
    names = dimap.band_names(ids)
    if len(names) != count or len(set(names)) != count:
        log.warning("%s: the product lists bands %s for %d band(s) in the file; band names not taken from it",
                    path, " ".join(ids), count)
        return implied
    log.info("%s: bands %s (%s in the product metadata)", path, ",".join(names), " ".join(ids))
    return names


def shift_rpc(rpc: RPC, *, dx: float, dy: float) -> RPC:
    values = rpc.to_dict()
    values["samp_off"] = rpc.samp_off - dx
    values["line_off"] = rpc.line_off - dy
    return RPC(**{k: v for k, v in values.items() if k in RPC.__init__.__code__.co_varnames})
