"""Shared fixtures: the real data folder and small synthetic GeoTIFFs with known answers.

Markers (registered in pyproject.toml):

- ``realdata``: the test reads ../shared/data. Given automatically to every test that uses the ``data_dir``
  fixture (directly or through another fixture); skipped, with one line naming the path, where the folder is
  absent. ``DELTACD_TEST_DATA`` points the tests at another folder (a missing one shows what needs the data).
- ``slow``: runs for more than a few seconds; ``pytest -m "not slow"`` is the quick subset.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# benchmarks/ (research scaffolding outside the package: fewlabel, levir), importable as its scripts import it.
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))

#: Real labelled data, next to the repository (CI has it at the same relative path).
SHARED_DATA = Path(os.environ.get("DELTACD_TEST_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
NO_DATA = f"real test data not found at {SHARED_DATA} (../shared/data next to the repository, or DELTACD_TEST_DATA)"


def pytest_report_header(config: pytest.Config) -> str:
    return f"real data: {SHARED_DATA}" + ("" if SHARED_DATA.is_dir() else " (absent: tests marked realdata are skipped)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use ``data_dir`` ``realdata``, and skip every ``realdata`` test when the data is absent."""
    absent = not SHARED_DATA.is_dir()
    if absent and os.environ.get("DELTACD_REQUIRE_DATA"):  # CI: a missing data folder must fail, not skip
        raise pytest.UsageError(f"{NO_DATA}; DELTACD_REQUIRE_DATA is set, so the real-data tests may not be skipped")
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
        if absent and item.get_closest_marker("realdata"):
            item.add_marker(pytest.mark.skip(reason=NO_DATA))


#: The extra of pyproject.toml that installs each optional package the tests use.
EXTRA_OF = {
    "torch": "learn", "torchvision": "learn", "timm": "learn", "segmentation_models_pytorch": "learn",
    "lightning": "learn", "kornia": "learn", "torchmetrics": "learn", "safetensors": "learn", "peft": "learn",
    "onnx": "learn", "onnxruntime": "learn", "dask": "scale", "distributed": "scale", "torchgeo": "benchmarks/requirements.txt",
    "sklearn": "test", "rio_cogeo": "test", "playwright": "test",
}


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip a test unless the optional packages it needs are installed: ``@needs("torch")``.

    For a whole module that imports them, use ``pytest.importorskip`` at its top instead.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    extras = sorted({EXTRA_OF.get(m, "?") for m in missing})
    files = [e for e in extras if e.endswith(".txt")]
    named = [e for e in extras if e not in files]
    how = " and ".join(([f"pip install 'deltacd[{','.join(named)}]'"] if named else []) + [f"pip install -r {f}" for f in files])
    reason = f"needs {', '.join(missing)} ({how})"
    return pytest.mark.skipif(bool(missing), reason=reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():  # only reached when the realdata skip was bypassed
        pytest.skip(NO_DATA)
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
    spinning at barriers made each forward pass ~20x slower. Without torch (a core install) it does nothing.
    """
    try:
        import torch  # only the modules that use torch pay for its import
    except ImportError:
        yield
        return
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


#: Debian's Chromium: the real browser the web map and report tests drive through Playwright.
CHROMIUM = Path("/usr/bin/chromium")


def launch_chromium(playwright):
    """Chromium, headless and offline (nothing of its own fetched from the network), from a sync Playwright."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                            "--disable-component-update", "--no-first-run"])


def watched_page(browser, width: int, height: int):
    """A new page of ``width`` x ``height`` CSS px, and the lists its console errors and requested URLs go to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    return page, errors, requests
