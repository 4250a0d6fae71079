"""``detect_batch``: many pairs with the same settings, each pair a task, on one machine or a Dask cluster.

A batch is a CSV file with one row per pair: ``name,before,after`` (relative paths are relative
to the CSV file). Each pair's outputs go to ``OUT/<name>/``, written by :func:`deltacd.detect`
with its usual rules (complete or absent), and ``OUT/batch.json`` records, pair by pair, the
status, the wall time, the number of polygons or the error. A pair that fails does not stop the
others. With ``resume``, pairs whose folder is complete are skipped and a pair that was killed
continues from its completed blocks; without it, an existing pair folder is an error for that
pair unless ``overwrite``.

Where a scene is split into blocks for one run (:mod:`deltacd.engine.blocks`), a batch sends
whole pairs to the workers: ``workers`` N local processes, each running one pair at a time
with ``cores / N`` threads, or ``scheduler`` the address of a running cluster. Inputs and output
folder must then be on storage every worker sees at the same path.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deltacd.config import DetectOptions, build_options
from deltacd.engine.blocks import dask_client
from deltacd.errors import DeltacdError, InputError, MissingInputError, OutputError
from deltacd.io.outputs import OutputLock, read_marker
from deltacd.io.records import dumps, environment

log = logging.getLogger(__name__)

BATCH_RECORD = "batch.json"


@dataclass(frozen=True)
class Pair:
    """One row of a batch file."""

    name: str
    before: str
    after: str


def read_pairs(path: str | Path) -> list[Pair]:
    """The pairs of a batch CSV (``name,before,after``), paths resolved against the file's folder.

    Raises
    ------
    InputError
        Missing columns, an empty or repeated name, a name that is not a plain folder name.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such batch file; give a CSV with columns name,before,after")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"name", "before", "after"} <= set(rows[0]):
        raise InputError(f"{path}: expected a CSV with columns name,before,after (one row per pair)")
    pairs, seen = [], set()
    for number, row in enumerate(rows, start=2):
        name = (row["name"] or "").strip()
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise InputError(f"{path}: line {number}: name {name!r} must be a plain folder name (the pair's output folder)")
        if name in seen:
            raise InputError(f"{path}: line {number}: name {name!r} is given twice; names must be unique")
        seen.add(name)
        where = [str(p if Path(p).is_absolute() else path.parent / p) for p in ((row["before"] or "").strip(), (row["after"] or "").strip())]
        pairs.append(Pair(name, *where))
    return pairs


def _detect_pair(pair: Pair, out: str, overwrite: bool, resume: bool, options: dict[str, Any]) -> dict[str, Any]:
    """One pair, in whichever process runs it: its record line; a bad input becomes its line's error, so one does not stop the batch."""
    from deltacd.pipeline import detect

    started = time.perf_counter()
    target = Path(out) / pair.name
    if resume and target.is_dir() and read_marker(target):
        return {"name": pair.name, "status": "skipped (complete)", "seconds": 0.0}
    try:
        result = detect(pair.before, pair.after, target, overwrite=overwrite, resume=resume, **options)
    except DeltacdError as exc:
        return {"name": pair.name, "status": "failed", "error": str(exc), "seconds": round(time.perf_counter() - started, 3)}
    return {"name": pair.name, "status": "ran", "seconds": round(time.perf_counter() - started, 3),
            "polygons": result.record["results"]["polygons"], "changed_area_ha": result.record["results"]["changed_area_ha"]}


def detect_batch(
    pairs: str | Path | list[Pair], out_dir: str | Path, *, workers: int | None = None, scheduler: str | None = None,
    overwrite: bool = False, resume: bool = False, progress: Callable[[int, int], None] | None = None, **options: Any,
) -> dict[str, Any]:
    """Run :func:`deltacd.detect` on every pair of a batch; returns the batch record (also ``OUT/batch.json``).

    Parameters
    ----------
    pairs
        A batch CSV (``name,before,after``) or a list of :class:`Pair`.
    out_dir
        Folder of the batch: new, empty, or one a batch wrote; each pair in ``OUT/<name>/``.
    workers, scheduler
        Pairs as tasks on a local Dask cluster of ``workers`` processes, or on the cluster at
        ``scheduler``; default one pair after another in this process.
    overwrite, resume
        As for :func:`deltacd.detect`, pair by pair; ``resume`` also skips complete pairs.
    **options
        :class:`~deltacd.config.DetectOptions` fields, the same for every pair.
    """
    pairs = read_pairs(pairs) if isinstance(pairs, (str, Path)) else list(pairs)
    if options.get("workers") or options.get("scheduler"):
        raise InputError("batch: workers and scheduler spread the pairs; give them to the batch, not as detect options")
    if workers and scheduler:
        raise InputError("batch: give workers (a local cluster) or scheduler (a running one), not both")
    if workers:
        options.setdefault("threads", max(1, (os.cpu_count() or 1) // workers))
    build_options(DetectOptions, options, source="batch options")  # every setting checked before any pair runs
    out = Path(out_dir)
    _check_batch_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines: list[dict[str, Any]] = []
    with OutputLock(out):
        if workers or scheduler:
            with dask_client(scheduler, workers) as client:
                from distributed import as_completed

                futures = [client.submit(_detect_pair, p, str(out), overwrite, resume, options, pure=False,
                                         key=f"deltacd-pair-{p.name}-{os.getpid()}") for p in pairs]
                for future in as_completed(futures):
                    lines.append(future.result())
                    if progress is not None:
                        progress(len(lines), len(pairs))
        else:
            for pair in pairs:
                lines.append(_detect_pair(pair, str(out), overwrite, resume, options))
                if progress is not None:
                    progress(len(lines), len(pairs))
    order = {p.name: i for i, p in enumerate(pairs)}
    lines.sort(key=lambda line: order[line["name"]])
    record = {
        "format": "deltacd-batch/1", **environment(), "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3), "scheduler": scheduler or (f"{workers} local workers" if workers else "this process"),
        "options": options, "pairs": lines,
        "failed": sum(line["status"] == "failed" for line in lines),
    }
    tmp = out / f".{BATCH_RECORD}.tmp"
    tmp.write_text(dumps(record))
    os.replace(tmp, out / BATCH_RECORD)
    return record


def _check_batch_folder(out: Path) -> None:
    """A batch folder must be new, empty, or one a batch wrote (it holds batch.json or pair outputs only)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another batch folder")
    foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != BATCH_RECORD
               and not (p.is_dir() and read_marker(p))]
    if foreign:
        raise OutputError(f"{out}: holds {', '.join(sorted(foreign)[:3])}, not written by a deltacd batch; "
                          "choose another batch folder (nothing was changed)")
