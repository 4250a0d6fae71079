"""``deltacd detect``: detect changes between two images.

Detect changes between BEFORE and AFTER and write change_score.tif, change_mask.tif, changes.gpkg,
quicklook.png and run.json into OUT. BEFORE/AFTER: a raster, a folder of single-band rasters,
or several files (Sentinel-2 bands).

API: :func:`deltacd.detect`. Its flags are the fields of :class:`deltacd.DetectOptions`
(:mod:`deltacd.cli.options`); ``batch`` shares them.
"""

from __future__ import annotations

import argparse
from typing import Any

from deltacd.cli.common import image_argument, load_config, progress_bars
from deltacd.errors import InputError

#: The help's sections, each a list of DetectOptions fields; a field in none of them is listed under "other settings".
GROUPS = {
    "method": ("method", "model", "tta", "uncertainty", "model_resolution", "runtime", "precision", "device", "threshold"),
    "inputs and grid": ("bands_before", "bands_after", "crs", "resolution", "aoi", "rpc_height", "dem", "nodata_before",
                        "nodata_after"),
    "preparation": ("harmonise", "coregistration"),
    "post-processing": ("min_area_m2", "morphology_radius_px"),
    "engine": ("tile_size", "overlap", "batch_size", "threads", "sample_pixels", "seed"),
    "scale-out and resume (the scene in blocks, each a task; same outputs)": ("workers", "scheduler", "block_size"),
}
METAVARS = {"scheduler": "ADDRESS", "model_resolution": "auto|grid|METRES", "resolution": "RES|X,Y"}


def add_detect_flags(p: argparse.ArgumentParser) -> None:
    """The flags of every DetectOptions field, ``--option`` for method options, and ``--config``."""
    from deltacd.cli.options import add_option_flags
    from deltacd.config import DetectOptions

    groups = add_option_flags(p, DetectOptions, GROUPS, aliases=DetectOptions.aliases, metavars=METAVARS)
    groups["method"].add_argument("--option", action="append", metavar="KEY=VALUE",
                                  help="method option, repeatable (e.g. chi2_quantile=0.999)")
    p.add_argument("--config", help="YAML file of detect settings (keys as the flags, e.g. min_area_m2); flags override it")


def method_options(values: dict[str, Any], items: list[str] | None) -> dict[str, Any]:
    """``values`` with the ``--option KEY=VALUE`` items added to its ``method_options``."""
    if not items:
        return values
    import yaml

    merged = dict(values.get("method_options") or {})
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--option {item!r}: expected KEY=VALUE, e.g. --option chi2_quantile=0.999")
        merged[key] = yaml.safe_load(value)
    return {**values, "method_options": merged}


def detect_options(args: argparse.Namespace) -> dict[str, Any]:
    """DetectOptions fields from a --config file, overridden by the flags given on the command line."""
    from dataclasses import fields

    from deltacd.cli.options import given
    from deltacd.config import DetectOptions, canonical_keys

    options = canonical_keys(load_config(args.config), DetectOptions.aliases, source=args.config or "--config")
    options.update(given(args, (f.name for f in fields(DetectOptions))))
    return method_options(options, args.option)


def print_result(result) -> None:
    """The outputs and the headline numbers of a detect run."""
    record = result.record
    results, coreg = record["results"], record.get("coregistration")
    print(f"outputs in {result.out_dir}/: change_score.tif change_mask.tif changes.gpkg quicklook.png run.json")
    print(
        f"grid {record['grid']['crs']} {record['grid']['width']}x{record['grid']['height']} px at "
        f"{record['grid']['res'][0]:g}; {results['polygons']} change polygons, "
        f"{results['changed_area_ha']:.2f} ha ({100 * (results['changed_fraction'] or 0):.2f} % of valid pixels)"
    )
    if coreg:
        state = "corrected" if coreg["corrected"] else "not corrected (use --coregistration correct)"
        print(
            f"residual shift of date 2: dx={coreg['dx']:+.2f} px dy={coreg['dy']:+.2f} px "
            f"({coreg['magnitude_m']:.2f} m, {coreg['blocks_used']}/{coreg['blocks_measured']} blocks agree), {state}"
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("before", metavar="BEFORE", help="image of date 1 (file, folder of band files, or FILE,FILE,...)")
    p.add_argument("after", metavar="AFTER", help="image of date 2 (same forms)")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the new run has succeeded")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed or interrupted run on OUT: reuse the blocks it completed (same inputs and settings)")
    add_detect_flags(p)


def run(args: argparse.Namespace) -> int:
    from deltacd.pipeline import detect

    with progress_bars(args) as bars:
        result = detect(image_argument(args.before), image_argument(args.after), args.out, overwrite=args.overwrite,
                        progress=bars, resume=args.resume, **detect_options(args))
    print_result(result)
    return 0
