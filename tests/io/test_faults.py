"""Faults of the machine, injected for real (issue 27): a full disk (a small tmpfs), a read-only mount, an input
truncated by another process during a run, a capped address space, a GPU asked for on a machine without one.

Each asserts exit code 1, exactly one line on stderr naming the folder, file or setting, no traceback, nothing
left beside the output, and an earlier output byte-identical. Mounting needs root (CI runs as root); where it is
refused the test is skipped with one line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import textured_scene, write_geotiff

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs or a read-only bind mount needs root")


def deltacd(*args: str, limit_as: int | None = None, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """The CLI in a child process (``prlimit --as`` when ``limit_as``), as a user runs it."""
    command = [sys.executable, "-m", "deltacd", *args, "-q"]
    if limit_as is not None:
        command = ["prlimit", f"--as={limit_as}", "--", *command]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def one_line_error(result, *needles: str) -> str:
    """The run failed with exit 1 and one stderr line holding every needle, without a traceback."""
    err = result.stderr.strip()
    assert result.returncode == 1, err
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith("deltacd: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pair(folder: Path, size: int) -> tuple[Path, Path]:
    before = textured_scene((size, size), seed=1)
    after = before.copy()
    after[:, size // 4: size // 2, size // 4: size // 2] += 600
    return (write_geotiff(folder / f"before_{size}.tif", before), write_geotiff(folder / f"after_{size}.tif", after))


@pytest.fixture
def mount_point(tmp_path):
    """Factory: mount a tmpfs of ``size`` (or bind ``source`` read-only) at a fresh folder; unmounted after."""
    mounted = []

    def mount(name: str, *, size: str | None = None, read_only_source: Path | None = None) -> Path:
        target = tmp_path / name
        target.mkdir()
        if size is not None:
            steps = [["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)]]
        else:
            steps = [["mount", "--bind", str(read_only_source), str(target)],
                     ["mount", "-o", "remount,bind,ro", str(target)]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode:
                pytest.skip(f"mount refused here ({done.stderr.strip()})")
            mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@ROOT_ONLY
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, mount_point):
    before, after = pair(tmp_path, 1024)
    disk = mount_point("small", size="300k")
    result = deltacd("detect", str(before), str(after), "-o", str(disk / "out"))
    one_line_error(result, f"no space left on {disk}", "free some space")
    assert list(disk.iterdir()) == []  # no staging folder, no lock, no output


@ROOT_ONLY
def test_a_full_disk_under_overwrite_keeps_the_earlier_output_byte_identical(tmp_path, mount_point):
    small_before, small_after = pair(tmp_path, 128)
    before, after = pair(tmp_path, 1024)
    disk = mount_point("small", size="600k")
    out = disk / "out"
    first = deltacd("detect", str(small_before), str(small_after), "-o", str(out))
    assert first.returncode == 0, first.stderr
    kept = digest(out)
    result = deltacd("detect", str(before), str(after), "-o", str(out), "--overwrite")
    one_line_error(result, f"no space left on {disk}")
    assert digest(out) == kept
    assert [p.name for p in disk.iterdir()] == ["out"]


@ROOT_ONLY
def test_a_read_only_output_folder_is_one_line(tmp_path, mount_point):
    before, after = pair(tmp_path, 128)
    source = tmp_path / "writable"
    source.mkdir()
    read_only = mount_point("read_only", read_only_source=source)
    result = deltacd("detect", str(before), str(after), "-o", str(read_only / "out"))
    one_line_error(result, str(read_only), "choose a writable output folder")
    assert list(source.iterdir()) == []


def test_an_input_truncated_during_the_run_is_one_line_naming_it(tmp_path):
    before, after = pair(tmp_path, 2048)
    out = tmp_path / "out"
    run = deltacd("detect", str(before), str(after), "-o", str(out), "--method", "irmad", "--tile-size", "64",
                  "--batch-size", "1", wait=False)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.*.partial/_work")) and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    with open(before, "r+b") as handle:  # another process cuts the file, as a failed copy would
        handle.truncate(before.stat().st_size // 3)
    _, err = run.communicate(timeout=600)
    result = subprocess.CompletedProcess(run.args, run.returncode, "", err)
    one_line_error(result, str(before), "truncated")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_out_of_memory_in_a_tile_names_the_setting_that_lowers_it(tmp_path):
    before, after = pair(tmp_path, 3072)
    out = tmp_path / "out"
    # 1.5 GB of address space: the imports (about 510 MB) and opening the pair fit, a 3 072 px tile does not
    # (the run needs about 2 GB with it); lower limits made PROJ's own allocations fail first
    result = deltacd("detect", str(before), str(after), "-o", str(out), "--tile-size", "3072", limit_as=1500 * 10**6)
    one_line_error(result, "out of memory", "--tile-size", "--batch-size")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_gpu_asked_for_on_a_machine_without_one_stops(tmp_path, data_dir):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    checkpoint = next((data_dir / "checkpoints_tinycd").rglob("*.pth"))
    before, after = pair(tmp_path, 128)
    result = deltacd("detect", str(before), str(after), "-o", str(tmp_path / "out"), "--model", f"tinycd:{checkpoint}",
                     "--device", "cuda")
    one_line_error(result, "device", "no CUDA GPU", "--device auto")
    assert not (tmp_path / "out").exists()


def test_a_pair_with_no_valid_pixel_is_one_line(tmp_path):
    empty = np.zeros((4, 128, 128), np.uint16)
    before = write_geotiff(tmp_path / "before.tif", empty, nodata=0)
    after = write_geotiff(tmp_path / "after.tif", empty, nodata=0)
    result = deltacd("detect", str(before), str(after), "-o", str(tmp_path / "out"))
    one_line_error(result, "no pixel is valid")
    assert not (tmp_path / "out").exists()
