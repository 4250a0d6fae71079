"""Output folders: never replace what deltacd did not make, one run at a time, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import deltacd
from deltacd.cli import main
from deltacd.errors import OutputError
from deltacd.io.outputs import MARKER, STAGING_TAG, OutputLock, staged_output


def _beside(folder: Path) -> list[str]:
    """Hidden leftovers of a run beside its output (staging folders, locks, trash)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_overwrite_never_deletes_the_folder_holding_the_inputs(scene_pair, tmp_path, capsys):
    before, after = scene_pair()  # both in tmp_path
    first = tmp_path / "run"
    deltacd.detect(before, after, first)
    # even a deltacd output is not replaced when it holds an input
    inside = first / "before.tif"
    inside.write_bytes(Path(before).read_bytes())
    code = main(["detect", str(inside), str(after), "-o", str(first), "--overwrite"])
    assert code == 1
    assert "holds the input" in capsys.readouterr().err
    assert inside.exists() and (first / "change_mask.tif").exists()
    code = main(["detect", str(before), str(after), "-o", str(tmp_path), "--overwrite"])
    assert code == 1
    assert Path(before).exists() and Path(after).exists()


def test_overwrite_refuses_a_folder_deltacd_did_not_make(scene_pair, tmp_path, capsys):
    before, after = scene_pair()
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.docx").write_text("a user's document")
    assert main(["detect", str(before), str(after), "-o", str(out), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "not a deltacd output folder" in err and err.count("\n") == 1
    assert (out / "report.docx").read_text() == "a user's document"
    assert _beside(tmp_path) == []


def test_overwrite_refuses_a_deltacd_output_holding_a_user_file(scene_pair, tmp_path):
    before, after = scene_pair()
    result = deltacd.detect(before, after, tmp_path / "out")
    (result.out_dir / "notes.txt").write_text("written by hand")
    with pytest.raises(OutputError, match="did not write.*notes.txt"):
        deltacd.detect(before, after, result.out_dir, overwrite=True)
    assert (result.out_dir / "notes.txt").exists()
    record = json.loads((result.out_dir / MARKER).read_text())
    assert "change_score.tif" in record["files"] and record["kind"] == "detect"


def test_a_second_run_on_a_locked_output_is_refused(scene_pair, tmp_path):
    before, after = scene_pair()
    out = tmp_path / "out"
    with OutputLock(out):  # another run holds the output
        with pytest.raises(OutputError, match="another deltacd run .* is writing this folder"):
            deltacd.detect(before, after, out)
    assert not out.exists()
    deltacd.detect(before, after, out)  # released: the next run goes through
    assert _beside(tmp_path) == []


def test_a_folder_that_appears_during_the_run_is_not_replaced(scene_pair, tmp_path):
    before, after = scene_pair()
    out = tmp_path / "out"

    def meanwhile(stage, done, total):
        if stage == "detect" and not out.exists():
            out.mkdir()
            (out / "theirs.txt").write_text("another program's file")

    with pytest.raises(OutputError, match="appeared while this run was working"):
        deltacd.detect(before, after, out, progress=meanwhile)
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert _beside(tmp_path) == []


_RUN = """
import sys, deltacd
deltacd.detect(sys.argv[1], sys.argv[2], sys.argv[3], method="irmad", tile_size=64, batch_size=1)
"""


def _start(before, after, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _RUN, str(before), str(after), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_concurrent_runs_on_one_output_do_not_corrupt_each_other(scene_pair, tmp_path):
    before, after = scene_pair(shape=(768, 768), change=(100, 100, 80, 80))
    out = tmp_path / "out"
    runs = [_start(before, after, out), _start(before, after, out)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(err for code, err in results if code)
    assert "another deltacd run" in loser or "output folder exists" in loser or "appeared while" in loser
    record = json.loads((out / "run.json").read_text())
    assert record["results"]["polygons"] >= 1
    assert _beside(tmp_path) == []


@pytest.mark.slow
def test_a_killed_run_leaves_no_lock_and_its_staging_is_cleaned_by_the_next(scene_pair, tmp_path):
    before, after = scene_pair(shape=(1024, 1024))
    out = tmp_path / "out"
    run = _start(before, after, out)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.*.partial/_work")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    stale = list(tmp_path.glob(".out.*.partial"))
    assert len(stale) == 1 and (stale[0] / STAGING_TAG).exists()
    foreign = tmp_path / ".out.notours.partial"  # same name pattern, but not deltacd's: left alone
    foreign.mkdir()
    deltacd.detect(before, after, out)
    assert not stale[0].exists() and foreign.exists()
    assert _beside(tmp_path) == [".out.notours.partial"]


def test_a_failed_run_removes_the_folders_it_created(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out, overwrite=False, kind="test") as staging:
            (staging / "x.txt").write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
