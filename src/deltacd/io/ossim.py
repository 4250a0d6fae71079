"""OSSIM keyword-list ``.geom`` sidecars (as written by OTB, OSSIM and CNES tools such as shareloc).

A ``.geom`` beside a sensor-geometry image holds its sensor model as ``key: value`` lines. Two
types hold rational polynomial coefficients in the NITF RPC00B layout GDAL uses:

- ``ossimRpcModel``: a generic RPC model (OTB's export of any RPC-bearing image);
- ``ossimPleiadesModel``: written by OSSIM/OTB for Pléiades (and SPOT 6/7) DIMAP products. Its
  ``*_coeff_NN`` are the product's ground-to-image (``Inverse_Model``) coefficients with the
  image offsets already in the zero-based convention (``samp_off`` is the DIMAP ``SAMP_OFF``
  minus 1), and ``support_data.band_name_list`` gives the product's bands in file order
  (``B2 B1 B0 B3`` for a Pléiades multispectral product: red, green, blue, near infrared).

Both describe the full product (``number_samples`` x ``number_lines``); a crop of it carries its
offset in the product as a pixel-unit "geotransform" of the TIFF (OTB ExtractROI, shareloc), which
the caller applies (:func:`deltacd.io.rasters.open_image`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rasterio.rpc import RPC

from deltacd.errors import InputError

#: OSSIM model types whose keyword list holds RPC coefficients.
RPC_MODEL_TYPES = ("ossimRpcModel", "ossimPleiadesModel")

_RPC_FIELDS = ("height_off", "height_scale", "lat_off", "lat_scale", "long_off", "long_scale",
               "line_off", "line_scale", "samp_off", "samp_scale")
_RPC_COEFFS = ("line_num_coeff", "line_den_coeff", "samp_num_coeff", "samp_den_coeff")


@dataclass(frozen=True)
class OssimGeom:
    """What a ``.geom`` says about its image."""

    path: Path
    model: str  # the keyword list's ``type``
    rpc: RPC | None  # None when the model holds no RPC coefficients
    bands: tuple[str, ...] | None = None  # band identifiers in file order (``B2 B1 B0 B3``, ``P``)
    size: tuple[int, int] | None = None  # (samples, lines) of the image the model describes


def read_geom(path: Path) -> OssimGeom | None:
    """The ``.geom`` at ``path``, or None when there is no such file.

    Raises
    ------
    InputError
        The file is an RPC model type but misses coefficients (a truncated export).
    """
    if not path.is_file():
        return None
    entries: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            entries[key.strip()] = value.strip()
    model = entries.get("type", "").strip() or "untyped"
    rpc = None
    if model in RPC_MODEL_TYPES:
        try:
            scalars = {k: float(entries[k]) for k in _RPC_FIELDS}
            coeffs = {k: [float(entries[f"{k}_{i:02d}"]) for i in range(20)] for k in _RPC_COEFFS}
        except (KeyError, ValueError) as exc:
            raise InputError(f"{path}: incomplete OSSIM {model} (missing or bad {exc}); re-export the .geom file") from exc
        rpc = RPC(**scalars, **coeffs)
    return OssimGeom(path, model, rpc, _band_list(entries), _size(entries))


def _band_list(entries: dict[str, str]) -> tuple[str, ...] | None:
    raw = entries.get("support_data.band_name_list")
    if not raw:
        return None
    ids = tuple(raw.strip().strip('"').split())
    return ids or None


def _size(entries: dict[str, str]) -> tuple[int, int] | None:
    try:
        return int(entries["number_samples"]), int(entries["number_lines"])
    except (KeyError, ValueError):
        return None
