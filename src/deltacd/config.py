"""Validated options: the same dataclasses serve the Python API, the CLI and YAML files.

Each options class is a pydantic dataclass that forbids unknown keys, so a typo in a YAML file
or a keyword argument is an error that names the key, never a silently ignored setting.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    ConfigDict,
    Field,
    FiniteFloat,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
)
from pydantic.dataclasses import dataclass

from deltacd.errors import InputError, MissingInputError

#: Every options class of deltacd forbids unknown keys, so a misspelt setting is an error, not a no-op.
STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclass(frozen=True, config=STRICT)
class DetectOptions:
    """Everything :func:`deltacd.detect` can be told, with working defaults.

    Attributes
    ----------
    method
        Change method: ``"cva"``, ``"irmad"`` or ``"zero-shot"`` (see ``deltacd methods``); ignored
        when ``model`` is given.
    method_options
        Keyword options of the method, e.g. ``{"chi2_quantile": 0.999}`` for IR-MAD.
    model
        A trained network: a deltacd ``.safetensors`` checkpoint, or ``ARCH:PATH`` for a checkpoint
        made by other code (``tinycd:levir_best.pth``). It carries its bands, normalisation and threshold.
    tta
        Flip test-time augmentation for ``model`` (4 passes, averaged).
    uncertainty
        For ``model``: also write ``change_uncertainty.tif``, the predictive entropy over the
        test-time augmentation views (implies ``tta``).
    device
        Where ``model`` runs: ``"auto"`` (a GPU when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    runtime
        For ``model``: ``"auto"`` runs it with ONNX Runtime on a CPU (3.2x faster than torch for
        TinyCD), torch on a GPU; ``"torch"`` or ``"onnx"`` force one.
    precision
        For ``model`` on a GPU: the autocast type, ``"fp16"``, ``"bf16"`` or ``"fp32"``.
    bands_before
        Band order of date 1, e.g. ``"B,G,R,N"`` (default: read from the file).
    bands_after
        Band order of date 2, e.g. ``"R,G,B,N"`` (default: read from the file).
    crs
        Output CRS, e.g. ``"EPSG:2154"`` (default: the first date's, or its UTM zone when geographic
        or in sensor geometry).
    resolution
        Output pixel size in CRS units, one number or (x, y) (default: the coarser of the two dates).
    aoi
        Vector file of the area of interest (any CRS); the grid is clipped to it and pixels outside
        are nodata.
    rpc_height
        Constant terrain height (m) for orthorectifying sensor-geometry inputs with their RPCs.
    dem
        DEM raster (heights above the ellipsoid) for orthorectifying sensor-geometry inputs with
        their RPCs.
    harmonise
        Radiometric normalisation of date 2 onto date 1: ``"pif"`` (IR-MAD pseudo-invariant
        pixels + orthogonal regression), ``"histogram"`` (quantile matching), ``"none"``, or
        ``"auto"``: ``"pif"`` for unsupervised methods, and for a model what it was trained with
        (``"none"`` unless its checkpoint says otherwise: on LEVIR-CD, PIF lowered TinyCD's F1 from
        0.937 to 0.916 because the network expects raw pairs).
    coregistration
        ``"report"`` measures the residual shift of date 2, ``"correct"`` also removes it, ``"off"``
        skips it.
    threshold
        ``"auto"`` (the method's rule: Otsu for CVA, chi-square quantile for IR-MAD) or a score value
        inside the range the method can produce (checked before any work).
    min_area_m2
        Minimum mapping unit of the change polygons, square metres.
    morphology_radius_px
        Disk radius in px of the opening + closing applied to the change mask (0: none).
    tile_size
        Tile side in px, at least 16 (default: the method's, 512, and 1024 for networks, whose tiles
        overlap by their context). A tile size whose batches cannot fit in memory is refused before
        any work.
    overlap
        Overlap between tiles in px (default: from the method).
    batch_size
        Tiles per batch.
    nodata_before
        Nodata value of date 1, overriding (or supplying) the one in the file. Non-finite values
        (NaN, inf) of float inputs are always no data.
    nodata_after
        Nodata value of date 2, as ``nodata_before``.
    model_resolution
        Resolution (m) ``model`` runs at: ``"auto"`` the ground sampling distance the checkpoint was
        trained at, when it records one (the pair is resampled to it and the score back to the
        output grid); ``"grid"`` the output grid as is; or a number of metres.
    sample_pixels
        Pixels drawn over the scene for statistics and fitting.
    seed
        Seed of every random choice (sampling), for repeatable runs.
    block_size
        Run the scene in blocks of this side in px, at least 256 (default 4 096 when ``workers`` or
        ``scheduler`` is given or the run resumes; :mod:`deltacd.engine.blocks`); the outputs are
        the same as a run in one piece.
    workers
        Run each block as a task on a local Dask cluster of this many worker processes.
    scheduler
        Run each block as a task on a running Dask cluster at this address (``tcp://HOST:8786``);
        inputs and output folder on storage every worker sees.
    threads
        Threads reading and scoring tiles (default: one per core).
    """

    method: str = "cva"
    method_options: dict[str, Any] | None = None
    model: str | None = None
    tta: bool = False
    uncertainty: bool = False
    device: str = "auto"
    runtime: Literal["auto", "torch", "onnx"] = "auto"
    precision: Literal["fp16", "bf16", "fp32"] = "fp16"
    bands_before: str | None = None
    bands_after: str | None = None
    crs: str | None = None
    resolution: PositiveFloat | tuple[PositiveFloat, PositiveFloat] | None = None
    aoi: Path | None = None
    rpc_height: float | None = None
    dem: Path | None = None
    harmonise: Literal["auto", "pif", "histogram", "none"] = "auto"
    coregistration: Literal["report", "correct", "off"] = "report"
    threshold: FiniteFloat | Literal["auto"] = "auto"
    min_area_m2: NonNegativeFloat = 12.0
    morphology_radius_px: NonNegativeInt = 0
    tile_size: Annotated[int, Field(ge=16)] | None = None
    overlap: NonNegativeInt | None = None
    batch_size: PositiveInt = 4
    sample_pixels: PositiveInt = 250_000
    seed: int = 0
    nodata_before: float | None = None
    nodata_after: float | None = None
    model_resolution: PositiveFloat | Literal["auto", "grid"] = "auto"
    block_size: Annotated[int, Field(ge=256)] | None = None
    workers: PositiveInt | None = None
    scheduler: str | None = None
    threads: PositiveInt | None = None

    #: Settings that decide how a run is spread over cores and processes, never what it computes.
    execution: ClassVar[tuple[str, ...]] = ("workers", "scheduler", "threads")

    #: Keys accepted in YAML files and keyword arguments under the name of their command-line flag.
    aliases: ClassVar[dict[str, str]] = {"min_area": "min_area_m2", "morphology": "morphology_radius_px"}

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


#: :class:`deltacd.damage.DamageOptions` settings under their earlier flag names, accepted as flags and keys.
DAMAGE_ALIASES: dict[str, str] = {"buffer": "buffer_m", "ring": "ring_m"}

T = TypeVar("T")

_UNION_BRANCH = re.compile(r"^(float|int|str|bool|none|dict|list|tuple|path|constrained-[a-z]+|[a-z-]+\[.*\])$")


def read_yaml(path: str | Path, *, what: str) -> Any:
    """What the YAML file ``path`` holds (``{}`` when it is empty), for every configuration file of deltacd.

    Raises
    ------
    MissingInputError
        No such file: ``"PATH: no such WHAT; check the path"``.
    InputError
        Not valid YAML: the parser's first line and the fix.
    """
    import yaml  # here, not at import: ``deltacd --help`` reads the options without it

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such {what}; check the path")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc


def build_options(cls: type[T], values: dict[str, Any], *, source: str = "options") -> T:
    """Validate ``values`` into ``cls``; any problem becomes a one-line :class:`InputError`.

    ``source`` names where the values came from (a YAML file, "detect()") for the message.
    """
    values = canonical_keys(values, getattr(cls, "aliases", {}), source=source)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{source}: unknown setting(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        # the loc path names fields and list indexes, and for a union also the branch tried ("float")
        key = ".".join(str(p) for p in error["loc"] if not _UNION_BRANCH.match(str(p))) or "?"
        raise InputError(f"{source}: setting {key}: {error['msg']} (got {error.get('input')!r})") from None


def canonical_keys(values: Mapping[str, Any], aliases: Mapping[str, str], *, source: str = "options") -> dict[str, Any]:
    """``values`` with every key spelt as its field: ``tile-size`` -> ``tile_size``, an alias -> its field.

    A flag and its YAML key are one name (``--min-area-m2``, ``min_area_m2``, ``min-area-m2``); ``aliases``
    (e.g. :attr:`DetectOptions.aliases`) maps earlier spellings (``min_area``) to the field.

    Raises
    ------
    InputError
        Two keys name the same setting (``min_area`` and ``min_area_m2``).
    """
    renamed: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        name = aliases.get(name, name)
        if name in renamed:
            raise InputError(f"{source}: {spelt[name]} and {key} name the same setting; give it once")
        renamed[name], spelt[name] = value, str(key)
    return renamed


def field_docs(cls: type) -> dict[str, str]:
    """The description of each field in the ``Attributes`` section of ``cls``'s numpydoc docstring, on one line.

    An entry that names several fields (``zones, zone_field``) gives its text to each. The command
    line takes its help texts from here, so a flag and its field are described once.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines[:-1]) if line == "Attributes" and set(lines[i + 1]) == {"-"}) + 2
    except StopIteration:
        return {}
    docs: dict[str, list[str]] = {}
    names: list[str] = []
    for i in range(start, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and lines[i + 1] and set(lines[i + 1]) == {"-"}:
            break  # the next section's header
        if line and not line[0].isspace():
            names = [name.strip() for name in line.split(",")]
            for name in names:
                docs[name] = []
        elif line.strip():
            for name in names:
                docs[name].append(line.strip())
    return {name: " ".join(text) for name, text in docs.items()}
