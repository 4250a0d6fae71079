"""Shared fixtures: the real data folder and small synthetic GeoTIFFs with known answers."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Real labelled data, next to the repository (CI has it at the same relative path).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; it must sit at ../shared/data next to the repository")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _onnx_cache(tmp_path_factory: pytest.TempPathFactory):
    """Exported ONNX graphs go to a folder of this test session, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DELTACD_CACHE_DIR", str(tmp_path_factory.mktemp("deltacd-cache")))
        yield


# --- small GeoTIFFs with known content --------------------------------------------------------

@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``).

    Their tensors are tiny: extra threads buy nothing, and on a busy 2-core machine OpenMP threads
    spinning at barriers made each forward pass ~20x slower.
    """
    import torch  # only the modules that use torch pay for its import

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402
from scipy import ndimage  # noqa: E402

LAMBERT93 = "EPSG:2154"


def write_geotiff(path, array, *, crs=LAMBERT93, transform=None, nodata=None, colorinterp=None):
    """Write ``array`` [C, H, W] as a GeoTIFF (default: 0.5 m pixels in Lambert-93 near Toulouse)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    transform = transform or Affine(0.5, 0, 574000.0, 0, -0.5, 6280000.0)
    with rasterio.open(
        path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
        dtype=array.dtype, crs=crs, transform=transform, nodata=nodata,
    ) as dst:
        dst.write(array)
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


def textured_scene(shape=(256, 256), bands=4, seed=0, dtype="uint16"):
    """A smooth random texture, like a 12-bit VHR scene: [bands, H, W] in 200..3000."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    base = (base - base.min()) / (base.max() - base.min())
    layers = [200 + 2800 * np.clip(base * (0.7 + 0.1 * b) + 0.05 * rng.normal(size=shape) * 0.1, 0, 1) for b in range(bands)]
    return np.stack(layers).astype(dtype)


@pytest.fixture
def scene_pair(tmp_path):
    """Factory: write a before/after GeoTIFF pair; ``change`` is a (row, col, h, w) box brightened in after."""

    def make(*, change=None, shape=(256, 256), bands=4, gain=1.0, offset=0.0, shift=(0.0, 0.0), seed=0, name="pair"):
        before = textured_scene(shape, bands, seed)
        after = before.astype("float64") * gain + offset
        if shift != (0.0, 0.0):
            after = np.stack([ndimage.shift(b, (shift[1], shift[0]), order=3, mode="nearest") for b in after])
        if change is not None:
            r, c, h, w = change
            after[:, r : r + h, c : c + w] = 3900 - after[:, r : r + h, c : c + w] * 0.5
        after = np.clip(after, 0, 4095).astype(before.dtype)
        b = write_geotiff(tmp_path / f"{name}_before.tif", before)
        a = write_geotiff(tmp_path / f"{name}_after.tif", after)
        return b, a

    return make
