"""Controlled degradations of the after image: illumination, atmosphere, sensor, compression, geometry.

Each perturbation is a plain function ``f(image, strength, *, data_range, seed) -> image`` on a
float32 array ``[C, H, W]`` in raw digital numbers (DN), for any band count. ``strength`` has
documented units (:attr:`Perturbation.units`), and **strength 0 always returns the input
unchanged** (a copy), so every robustness curve starts at the unperturbed result. The functions
are deterministic: the only random choices (per-band weights of gain/offset, the noise) come from
``numpy.random.default_rng(seed)``.

``data_range`` is the largest value the sensor can record (255 for 8-bit, 2047 for 11-bit,
4095 for 12-bit images stored as uint16); offsets and noise are fractions of it, and JPEG
re-quantises to 8 bits against it. :func:`data_range_of` guesses it from the data.

The functions return float32 and do **not** clip or round: casting back to the file's type
(and saturating at its limits) is the caller's choice (:func:`deltacd.evaluate.robustness.robustness`
rounds and clips to the after image's integer type, like a sensor would). Inputs must be finite
(fill no-data first).

=============  ==================================  =====================================================
name           strength                            model
=============  ==================================  =====================================================
``gain``       relative gain change                ``x_b * (1 + s * w_b)``, ``w_b ~ U(0.5, 1)`` per band
``offset``     fraction of ``data_range``          ``x_b + s * R * w_b``, ``w_b ~ U(0.5, 1)`` per band
``gamma``      gamma exponent - 1                  ``R * (x / R) ** (1 + s)``
``haze``       haze fraction (1 - transmission)    ``x * (1 - s) + s * A_b`` (airlight ``A_b``)
``blur``       Gaussian sigma, pixels              ``gaussian_filter(x, s)``
``noise``      noise sigma, fraction of range      ``x + N(0, (s R)^2)``, independent per pixel and band
``jpeg``       100 - JPEG quality                  Pillow JPEG at quality ``100 - s`` (0: not compressed)
``shift``      misregistration, pixels             sub-pixel translation by ``s`` px at ``angle_deg``
``coarsen``    resolution factor (0 or 1: none)    area average over ``s x s`` px, bilinear back to the grid
=============  ==================================  =====================================================

References
----------
.. [1] Schott, J. R., Salvaggio, C., Volchok, W. J. (1988). Radiometric scene normalization
   using pseudoinvariant features. *Remote Sensing of Environment* 26(1), 1-16.
   doi:10.1016/0034-4257(88)90116-2 (why gain/offset between dates matter, and how they are undone).
.. [2] He, K., Sun, J., Tang, X. (2011). Single image haze removal using dark channel prior.
   *IEEE TPAMI* 33(12), 2341-2353. doi:10.1109/TPAMI.2010.168 (the haze model
   ``I = J t + A (1 - t)`` and the airlight taken from the brightest pixels).
.. [3] Dai, X., Khorram, S. (1998). The effects of image misregistration on the accuracy of
   remotely sensed change detection. *IEEE TGRS* 36(5), 1566-1577. doi:10.1109/36.718860
.. [4] Wallace, G. K. (1992). The JPEG still picture compression standard. *IEEE Transactions
   on Consumer Electronics* 38(1), xviii-xxxiv. doi:10.1109/30.125072
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage, sparse

from deltacd.errors import InputError

__all__ = [
    "PERTURBATIONS",
    "Perturbation",
    "blur",
    "coarsen",
    "data_range_of",
    "gain",
    "gamma",
    "get_perturbation",
    "haze",
    "jpeg",
    "noise",
    "offset",
    "shift",
]

#: Signature shared by every perturbation function.
PerturbFunction = Callable[..., np.ndarray]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as a float32 copy ``[C, H, W]`` (a fresh array: the input is never modified)."""
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise InputError(f"perturbation {name}: image of shape {arr.shape}, expected [C, H, W]; add a band axis with image[None]")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"perturbation {name}: image of dtype {arr.dtype}, expected numbers")
    return np.array(arr, dtype=np.float32, copy=True)


def _check_strength(name: str, strength: float, low: float, high: float, *, low_open: bool = False, units: str = "") -> float:
    s = float(strength)
    below = s <= low if low_open else s < low
    if not math.isfinite(s) or below or s > high:
        bracket = "(" if low_open else "["
        raise InputError(
            f"perturbation {name}: strength {strength!r} outside {bracket}{low:g}, {high:g}]"
            + (f" ({units})" if units else "")
            + f"; see deltacd.evaluate.perturb.PERTURBATIONS[{name!r}].strengths for typical values"
        )
    return s


def _check_range(name: str, data_range: float | None, image: np.ndarray) -> float:
    if data_range is None:
        return data_range_of(image)
    r = float(data_range)
    if not (math.isfinite(r) and r > 0):
        raise InputError(
            f"perturbation {name}: data_range {data_range!r} must be a positive number (255 for 8-bit, 4095 for 12-bit)"
        )
    return r


def _band_weights(n_bands: int, seed: int) -> np.ndarray:
    """Per-band weights in [0.5, 1]: bands change unequally (a colour cast), all in the same direction."""
    return np.random.default_rng(seed).uniform(0.5, 1.0, n_bands).astype(np.float32)


def data_range_of(values: np.ndarray, dtype: np.dtype | str | None = None) -> float:
    """Guess the sensor's data range (largest recordable value) from the values and the storage type.

    uint8 -> 255; other integer types (or integer-valued floats) -> the smallest ``2**k - 1``
    (k >= 8) not below the largest value, e.g. 4095 for 12-bit data stored as uint16;
    other floats -> the largest finite value (1.0 for reflectances in [0, 1]).

    Parameters
    ----------
    values
        Any array of the image (NaN ignored).
    dtype
        Storage type of the file, when ``values`` has already been converted to float.
    """
    arr = np.asarray(values)
    dtype = np.dtype(dtype or arr.dtype)
    if dtype == np.uint8:
        return 255.0
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr.ravel()
    top = float(finite.max()) if finite.size else 0.0
    integer_valued = np.issubdtype(dtype, np.integer) or (top > 1 and bool(np.array_equal(finite, np.round(finite))))
    if integer_valued:
        bits = max(8, math.ceil(math.log2(top + 1))) if top > 0 else 8
        return float(2**bits - 1)
    return top if top > 0 else 1.0


# --------------------------------------------------------------------------------------------
# radiometric perturbations
# --------------------------------------------------------------------------------------------


def gain(image: np.ndarray, strength: float, *, data_range: float | None = None, seed: int = 0) -> np.ndarray:
    """Per-band gain: band ``b`` multiplied by ``1 + strength * w_b``, ``w_b`` uniform in [0.5, 1] from ``seed``.

    ``strength`` is the largest relative change (0.2: +10 to +20 % depending on the band;
    negative values darken), > -1. Models a different sun elevation, exposure or calibration:
    what radiometric harmonisation (``harmonise="pif"``) is meant to undo.
    """
    x = _check_image(image, "gain")
    s = _check_strength("gain", strength, -1.0, 100.0, low_open=True, units="relative gain change")
    if s == 0:
        return x
    factors = 1.0 + s * _band_weights(len(x), seed)
    return x * factors[:, None, None]


def offset(image: np.ndarray, strength: float, *, data_range: float | None = None, seed: int = 0) -> np.ndarray:
    """Per-band additive offset: ``x_b + strength * data_range * w_b``, ``w_b`` uniform in [0.5, 1] from ``seed``.

    ``strength`` is a fraction of the data range (0.05 = up to 5 % of full scale; negative values
    subtract). Models a path-radiance or dark-current difference.
    """
    x = _check_image(image, "offset")
    s = _check_strength("offset", strength, -1.0, 1.0, units="fraction of the data range")
    if s == 0:
        return x
    r = _check_range("offset", data_range, x)
    return x + (s * r * _band_weights(len(x), seed))[:, None, None]


def gamma(image: np.ndarray, strength: float, *, data_range: float | None = None, seed: int = 0) -> np.ndarray:
    """Gamma curve ``R * (x / R) ** (1 + strength)`` (``R`` = ``data_range``), all bands alike.

    ``strength`` = gamma exponent - 1, > -1: positive darkens the mid-tones, negative brightens
    them; black and full scale are kept. A non-linear tone change (different processing or
    rendering of the two dates) that a per-band linear harmonisation cannot undo exactly.
    Negative DN are treated as 0.
    """
    x = _check_image(image, "gamma")
    s = _check_strength("gamma", strength, -1.0, 10.0, low_open=True, units="gamma exponent - 1")
    if s == 0:
        return x
    r = _check_range("gamma", data_range, x)
    return (r * np.power(np.clip(x, 0, None) / r, 1.0 + s)).astype(np.float32)


def haze(
    image: np.ndarray,
    strength: float,
    *,
    data_range: float | None = None,
    seed: int = 0,
    airlight: float | np.ndarray | None = None,
) -> np.ndarray:
    """Uniform haze: ``x * (1 - t) + t * A_b`` with ``t = strength`` in [0, 1).

    The atmospheric scattering model ``I = J t' + A (1 - t')`` (He et al. 2011,
    doi:10.1109/TPAMI.2010.168) with a transmission ``t' = 1 - strength`` uniform over the scene:
    contrast falls by ``1 - strength`` and every pixel moves towards the airlight ``A``.

    Parameters
    ----------
    airlight
        DN of the haze per band (scalar or ``[C]``); default: each band's 99.9th percentile, the
        brightest pixels, as in the dark-channel estimate. Real haze is bluer (stronger scattering
        at short wavelengths); pass a per-band ``airlight`` to model that.
    """
    x = _check_image(image, "haze")
    s = _check_strength("haze", strength, 0.0, 0.99, units="haze fraction, 1 - transmission")
    if s == 0:
        return x
    if airlight is None:
        a = np.percentile(x.reshape(len(x), -1), 99.9, axis=1).astype(np.float32)
    else:
        a = np.broadcast_to(np.asarray(airlight, dtype=np.float32), (len(x),))
    return x * (1.0 - s) + s * a[:, None, None]


def noise(image: np.ndarray, strength: float, *, data_range: float | None = None, seed: int = 0) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation ``strength * data_range``.

    Independent per pixel and band, drawn from ``default_rng(seed)``. ``strength`` is a fraction of
    the data range (0.01 = 1 % of full scale, 2.6 DN for 8-bit).
    """
    x = _check_image(image, "noise")
    s = _check_strength("noise", strength, 0.0, 1.0, units="noise sigma, fraction of the data range")
    if s == 0:
        return x
    r = _check_range("noise", data_range, x)
    return x + np.random.default_rng(seed).normal(0.0, s * r, size=x.shape).astype(np.float32)


def jpeg(image: np.ndarray, strength: float, *, data_range: float | None = None, seed: int = 0) -> np.ndarray:
    """JPEG compression at quality ``100 - strength`` (Pillow / libjpeg), decoded back to DN.

    ``strength`` in [0, 100]: 0 = not compressed (identity), 25 = quality 75 (Pillow's default),
    90 = quality 10.

    8-bit data (``data_range`` 255) with 1 or 3 bands is compressed as one greyscale or RGB
    JPEG (Pillow's default 4:2:0 chroma subsampling, as most JPEG files; the bands are taken to
    be R, G, B in that order). Any other band count or range is compressed **band by band** as
    greyscale JPEGs after scaling to 8 bits (``round(x / R * 255)``) and scaled back, so for data
    deeper than 8 bits the error includes the 8-bit requantisation (about ``R / 255 / sqrt(12)``
    DN rms) — baseline JPEG has no deeper mode in Pillow.
    """
    x = _check_image(image, "jpeg")
    s = _check_strength("jpeg", strength, 0.0, 100.0, units="100 - JPEG quality")
    if s == 0:
        return x
    r = _check_range("jpeg", data_range, x)
    quality = int(round(100 - s))
    if r == 255 and len(x) in (1, 3):
        planes = [np.clip(np.rint(x), 0, 255).astype(np.uint8)]
        scale = 1.0
    else:
        planes = [np.clip(np.rint(band / r * 255.0), 0, 255).astype(np.uint8)[None] for band in x]
        scale = r / 255.0
    out = []
    for plane in planes:
        pil = Image.fromarray(plane[0] if len(plane) == 1 else np.moveaxis(plane, 0, -1))
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            values = np.asarray(decoded, dtype=np.float32)
        out.append(values[None] if values.ndim == 2 else np.moveaxis(values, -1, 0))
    return (np.concatenate(out) * scale).astype(np.float32)


# --------------------------------------------------------------------------------------------
# spatial perturbations
# --------------------------------------------------------------------------------------------


def blur(image: np.ndarray, strength: float, *, data_range: float | None = None, seed: int = 0) -> np.ndarray:
    """Gaussian blur of standard deviation ``strength`` pixels (each band, edges repeated).

    Models a softer optical transfer function (defocus, atmospheric blur, a different sensor).
    """
    x = _check_image(image, "blur")
    s = _check_strength("blur", strength, 0.0, 100.0, units="Gaussian sigma, pixels")
    if s == 0:
        return x
    return np.stack([ndimage.gaussian_filter(band, s, mode="nearest") for band in x])


def shift(
    image: np.ndarray,
    strength: float,
    *,
    data_range: float | None = None,
    seed: int = 0,
    angle_deg: float = 45.0,
) -> np.ndarray:
    """Translate the image by ``strength`` pixels towards ``angle_deg`` (sub-pixel, cubic spline).

    ``angle_deg`` is measured from the +x axis (east/right) towards +y (south/down): the default
    45 moves the content ``strength / sqrt(2)`` px right and down. A feature at column ``c`` ends
    at ``c + dx``, the sign convention of :mod:`deltacd.prepare.coregistration`, so
    :func:`~deltacd.prepare.coregistration.estimate_shift` reports ``(dx, dy)``. Edges are filled by
    repeating the border. Cubic-spline resampling slightly smooths the image at non-integer shifts
    (as any resampling of a real image would).
    """
    x = _check_image(image, "shift")
    s = _check_strength("shift", strength, 0.0, 1000.0, units="pixels")
    if s == 0:
        return x
    angle = math.radians(angle_deg)
    dx, dy = s * math.cos(angle), s * math.sin(angle)
    return np.stack([ndimage.shift(band, (dy, dx), order=3, mode="nearest") for band in x])


def _area_matrix(n: int, factor: float) -> sparse.csr_matrix:
    """[m, n] averaging matrix: coarse pixel i is the area-weighted mean of fine pixels in [i f, (i + 1) f)."""
    m = math.ceil(n / factor - 1e-9)
    rows, cols, weights = [], [], []
    for i in range(m):
        lo, hi = i * factor, min((i + 1) * factor, n)
        for j in range(int(math.floor(lo)), int(math.ceil(hi))):
            w = min(hi, j + 1) - max(lo, j)
            if w > 1e-12:
                rows.append(i)
                cols.append(j)
                weights.append(w / (hi - lo))
    return sparse.csr_matrix((weights, (rows, cols)), shape=(m, n))


def _upsample_matrix(n: int, factor: float, m: int) -> sparse.csr_matrix:
    """[n, m] linear interpolation from coarse pixel centres back to the fine pixel centres."""
    u = np.clip((np.arange(n) + 0.5) / factor - 0.5, 0, m - 1)
    lo = np.floor(u).astype(int)
    hi = np.minimum(lo + 1, m - 1)
    frac = u - lo
    rows = np.concatenate([np.arange(n), np.arange(n)])
    return sparse.csr_matrix((np.concatenate([1 - frac, frac]), (rows, np.concatenate([lo, hi]))), shape=(n, m))


def coarsen(image: np.ndarray, strength: float, *, data_range: float | None = None, seed: int = 0) -> np.ndarray:
    """Coarser resolution on the same grid: area average over ``strength x strength`` pixels, then bilinear back.

    ``strength`` is the resolution factor (2: a 0.5 m image becomes a 1 m image resampled to
    0.5 m pixels); 0 and 1 mean no change; values in (0, 1) are refused; non-integer factors are
    exact (area-weighted). The grid, and so the pixel count, is unchanged: only detail is lost, the
    way a coarser sensor resampled onto the finer date's grid looks. Cost: two sparse products
    per band, O(C H W).
    """
    x = _check_image(image, "coarsen")
    s = float(strength)
    if s == 0 or s == 1:
        return x
    s = _check_strength("coarsen", strength, 1.0, 1000.0, units="resolution factor (0 or 1: none)")
    _, h, w = x.shape
    down_r, down_c = _area_matrix(h, s), _area_matrix(w, s)
    up_r = _upsample_matrix(h, s, down_r.shape[0])
    up_c = _upsample_matrix(w, s, down_c.shape[0])
    out = np.empty_like(x)
    for b, band in enumerate(x.astype(np.float64)):
        coarse = down_r @ band @ down_c.T  # [m_r, m_c]
        out[b] = up_r @ coarse @ up_c.T
    return out


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Perturbation:
    """A named perturbation, its strength units and the strengths a robustness curve uses by default.

    Attributes
    ----------
    name
        Registry key (``deltacd robustness --perturbation NAME``).
    function
        ``function(image [C, H, W], strength, *, data_range, seed) -> float32 [C, H, W]``.
    units
        What ``strength`` measures (axis label and CSV column).
    strengths
        Default strengths, increasing degradation, starting at 0 (the unperturbed image).
    what
        One line on what it models.
    """

    name: str
    function: PerturbFunction
    units: str
    strengths: tuple[float, ...]
    what: str

    def __call__(self, image: np.ndarray, strength: float, *, data_range: float | None = None, seed: int = 0) -> np.ndarray:
        return self.function(image, strength, data_range=data_range, seed=seed)


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("gain", gain, "relative gain change", (0.0, 0.1, 0.2, 0.3, 0.5),
                     "per-band gain (sun elevation, exposure, calibration)"),
        Perturbation("offset", offset, "fraction of data range", (0.0, 0.02, 0.05, 0.1, 0.2),
                     "per-band additive offset (path radiance, dark current)"),
        Perturbation("gamma", gamma, "gamma exponent - 1", (0.0, 0.1, 0.25, 0.5, 1.0),
                     "non-linear tone curve (different processing of the dates)"),
        Perturbation("haze", haze, "haze fraction", (0.0, 0.1, 0.2, 0.3, 0.5),
                     "uniform haze: contrast loss towards the airlight"),
        Perturbation("blur", blur, "Gaussian sigma (px)", (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
                     "optical blur"),
        Perturbation("noise", noise, "noise sigma (fraction of range)", (0.0, 0.005, 0.01, 0.02, 0.05),
                     "sensor noise, white Gaussian"),
        Perturbation("jpeg", jpeg, "100 - JPEG quality", (0.0, 5.0, 25.0, 50.0, 75.0, 90.0),
                     "JPEG compression artefacts"),
        Perturbation("shift", shift, "misregistration (px)", (0.0, 0.5, 1.0, 2.0, 3.0, 4.0),
                     "residual misregistration of the after image"),
        Perturbation("coarsen", coarsen, "resolution factor", (0.0, 1.5, 2.0, 3.0, 4.0),
                     "coarser resolution resampled onto the same grid"),
    )
}


def get_perturbation(name: str) -> Perturbation:
    """The perturbation called ``name``.

    Raises
    ------
    InputError
        Unknown name; the message lists the available ones.
    """
    if name not in PERTURBATIONS:
        raise InputError(f"perturbation: unknown perturbation {name!r}; available: {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[name]
