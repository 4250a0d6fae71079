"""Band names: what the user declares, what a file says, and which bands two dates share.

Bands are matched by name, never by position, so that a B,G,R,NIR image and an R,G,B,NIR image
are compared band for band. Names are canonicalised: ``BLUE``/``B`` -> ``B``, ``GREEN`` -> ``G``,
``RED`` -> ``R``, ``NIR``/``N`` -> ``N``, ``PAN``/``P`` -> ``PAN``; Sentinel-2 names keep their
two-digit form (``B2`` -> ``B02``, ``B8A``). To compare Sentinel-2 with a 4-band VHR image,
declare the Sentinel-2 bands as ``B,G,R,N``. A model that needs colour names finds them on
Sentinel-2 images through :data:`SENTINEL2_EQUIVALENT`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deltacd.errors import InputError

_ALIASES = {
    "BLUE": "B",
    "B": "B",
    "GREEN": "G",
    "G": "G",
    "RED": "R",
    "R": "R",
    "NIR": "N",
    "N": "N",
    "NIR1": "N",
    "PAN": "PAN",
    "P": "PAN",
    "PANCHRO": "PAN",
    "PANCHROMATIC": "PAN",
    "GRAY": "PAN",
    "GREY": "PAN",
}
_S2 = re.compile(r"^B0?(\d{1,2}|8A)$")
_S2_IN_FILENAME = re.compile(r"[_\-.]B(0[1-9]|1[0-2]|8A)(?=[_\-.]|$)", re.IGNORECASE)

#: Preference order when a method needs an RGB view (quicklooks, RGB-pretrained models).
RGB = ("R", "G", "B")

#: The Sentinel-2 band standing in for a colour name when a model asks for B, G, R or N and the
#: images only have Sentinel-2 names (10 m bands; B08 rather than B8A for NIR, as in most RGBN stacks).
SENTINEL2_EQUIVALENT = {"B": "B02", "G": "B03", "R": "B04", "N": "B08"}


def canonical(name: str) -> str:
    """Canonical form of one band name (``"nir"`` -> ``"N"``, ``"B8"`` -> ``"B08"``)."""
    key = name.strip().upper()
    if key in _ALIASES:
        return _ALIASES[key]
    match = _S2.match(key)
    if match:
        num = match.group(1)
        return "B8A" if num == "8A" else f"B{int(num):02d}"
    return key


def is_known(name: str) -> bool:
    """True for a canonical name of a real band (``B``, ``N``, ``PAN``, ``B8A`` ...), not a free label."""
    return name in _ALIASES.values() or bool(_S2.match(name))


def parse_bands(spec: str | Sequence[str], *, setting: str = "bands") -> tuple[str, ...]:
    """Parse a declared band order, e.g. ``"B,G,R,N"`` or ``["R", "G", "B", "NIR"]``.

    Raises
    ------
    InputError
        If the list is empty or names a band twice.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = tuple(canonical(item) for item in items if str(item).strip())
    if not names:
        raise InputError(f"{setting}: empty band list; give names in file order, e.g. B,G,R,N")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{setting}: band(s) {', '.join(duplicates)} named twice in {','.join(names)}; give each band once")
    return names


def band_from_filename(path: str) -> str | None:
    """The Sentinel-2 band named in a file name (``..._B8A.tif`` -> ``B8A``), if any."""
    match = _S2_IN_FILENAME.search(path.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".")
    return canonical("B" + match.group(1).upper()) if match else None


def default_names(count: int, colorinterp: Sequence[str], descriptions: Sequence[str | None]) -> tuple[str, ...]:
    """Band names a file implies when the user declares none.

    Descriptions (set by GDAL writers) win when they are all known band names; then a red/green/blue colour interpretation; then a
    single band is ``PAN``; otherwise positional names ``1, 2, ...`` that only match an input of
    the same band count.
    """
    if all(descriptions):
        names = tuple(canonical(str(d)) for d in descriptions)
        if len(set(names)) == count and all(is_known(n) for n in names):
            return names
    interp = [c.lower() for c in colorinterp]
    if interp[:3] == ["red", "green", "blue"]:
        return RGB + tuple(str(i) for i in range(4, count + 1))
    if count == 1:
        return ("PAN",)
    return tuple(str(i) for i in range(1, count + 1))


def common_bands(before: Sequence[str], after: Sequence[str]) -> tuple[str, ...]:
    """Bands present at both dates, in the order of the first date.

    Raises
    ------
    InputError
        If the dates share no band.
    """
    shared = tuple(name for name in before if name in set(after))
    if not shared:
        raise InputError(
            f"the dates share no band: before has {','.join(before)}, after has {','.join(after)}; "
            "declare the band order of each input (--bands-before/--bands-after, e.g. B,G,R,N)"
        )
    return shared
