"""What :func:`deltacd.damage.damage` can be told: its own settings and the pair settings it shares with detect.

Kept apart from the pipeline, which imports numpy, rasterio and geopandas, so the command line can build its
flags (one per field) without loading them.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, NonNegativeFloat, PositiveFloat
from pydantic.dataclasses import dataclass as pydantic_dataclass

from deltacd.config import STRICT, DetectOptions, build_options
from deltacd.errors import InputError

#: Settings of detect that damage uses for the pair and the pixel change score.
DETECT_KEYS = ("bands_before", "bands_after", "crs", "resolution", "aoi", "rpc_height", "dem", "harmonise",
               "coregistration", "threshold", "tile_size", "overlap", "batch_size", "sample_pixels", "seed",
               "nodata_before", "nodata_after", "method_options")


@pydantic_dataclass(frozen=True, config=STRICT)
class DamageOptions:
    """What :func:`damage` can be told besides the pair settings it shares with detect (``DETECT_KEYS``).

    Attributes
    ----------
    method
        ``"auto"`` (``change``, or the method of ``model`` when one is given), ``"change"``,
        ``"classifier"`` or ``"segmentation"`` (:mod:`deltacd.damage.methods`).
    model
        A damage model (``.safetensors`` from ``deltacd train``, task damage-classifier or
        damage-segmentation) for the trained methods.
    localisation_model
        A building segmentation model (task building-localisation) that finds the buildings on
        the pre image when no footprints are given.
    id_field
        Field of the footprints that identifies a building (default: its row number).
    buffer_m
        Buffer applied to every footprint (m), for footprints shifted against the imagery.
    ring_m
        Width of the ring around each footprint whose change statistics are reported (m).
    change_method
        Pixel change score: ``"cva"`` or ``"zero-shot"``.
    share_thresholds
        Changed shares of a footprint at which the ``change`` method grades minor, major, destroyed.
    min_valid_share
        Buildings whose valid pixels cover less of their footprint are unclassified.
    min_building_m2
        Smallest building kept when buildings are found by ``localisation_model``.
    zones, zone_field
        Polygons (e.g. communes) and their name field: ``summary.csv`` then counts per zone too.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``: for the networks.
    """

    method: str = "auto"  # any registered damage method (deltacd.methods.registry): checked when it is built
    model: str | None = None
    localisation_model: str | None = None
    id_field: str | None = None
    buffer_m: NonNegativeFloat = 0.0
    ring_m: NonNegativeFloat = 3.0
    change_method: str = "cva"  # any registered change method
    share_thresholds: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)],
                            Annotated[float, Field(gt=0, le=1)]] = (0.10, 0.25, 0.50)
    min_valid_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_building_m2: PositiveFloat = 10.0
    zones: Path | None = None
    zone_field: str | None = None
    device: str = "auto"


def split_options(options: dict[str, Any]) -> tuple[DamageOptions, DetectOptions]:
    """Damage settings and the pair settings shared with detect, each validated (unknown keys refused)."""
    damage_keys = {f.name for f in fields(DamageOptions)}
    aliases = DetectOptions.aliases
    ours = {k: v for k, v in options.items() if str(k).replace("-", "_") in damage_keys}
    theirs = {k: v for k, v in options.items() if k not in ours}
    unknown = sorted(k for k in theirs if aliases.get(str(k).replace("-", "_"), str(k).replace("-", "_")) not in DETECT_KEYS)
    if unknown:
        raise InputError(f"damage options: unknown setting(s) {', '.join(unknown)}; accepted: "
                         f"{', '.join(sorted(damage_keys | set(DETECT_KEYS)))}")
    damage_opts = build_options(DamageOptions, ours, source="damage options")
    detect_opts = build_options(DetectOptions, {**theirs, "method": damage_opts.change_method}, source="damage options")
    return damage_opts, detect_opts


__all__ = ["DETECT_KEYS", "DamageOptions", "split_options"]
