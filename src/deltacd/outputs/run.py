"""The run skeleton: what every verb that writes a run folder repeats, in one place.

A :class:`Run` is made before any work (it refuses an output folder it could not publish to, at once) and
entered around the work. Inside it:

* the outputs are staged in a hidden folder beside the output folder, locked against a second run, and
  renamed into place only when the run succeeded (:func:`deltacd.io.outputs.staged_output`);
* the run's log and warnings go to ``deltacd.log`` and to the record (:class:`deltacd.io.runlog.RunLog`);
* BLAS is held to one thread and GDAL's block cache is capped (:func:`one_blas_thread`,
  :func:`deltacd.io.rasters.gdal_env`);
* ``run.workdir`` is a scratch folder inside the staging folder, removed before publishing;
* the machine's faults (full disk, lost mount, no memory, an input changed while read) end the run with one
  line, the staging folder removed, the lock released, an earlier output untouched
  (:func:`deltacd.io.faults.machine_fault`);
* background work started with :meth:`Run.submit` is waited for before the run ends, even when it fails,
  so a measure still running cannot print after the error;
* :meth:`Run.record` builds ``run.json``'s header (version, time, environment, inputs, warnings, timings).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from deltacd._version import __version__
from deltacd.io.outputs import check_output, input_paths, staged_output
from deltacd.io.rasters import gdal_env
from deltacd.io.records import environment, write_json
from deltacd.io.runlog import RunLog
from deltacd.outputs.layout import RUN_RECORD

#: Progress of a named stage: ``progress(stage, done, total)``.
StageProgress = Callable[[str, int, int], None]


def one_blas_thread() -> threadpool_limits:
    """Hold BLAS to one thread for a run (a context manager; the previous setting is restored).

    The engine's thread pool over windows, and the co-registration beside it, already use every
    core: BLAS threads on top of them only oversubscribe the cores (the rule scikit-learn and Dask
    follow). On 2 cores, beside a busy numpy thread, the co-registration measure of a 5 000 px
    pair took 0.99 s on OpenBLAS's 2 threads against 0.70 s on one (benchmarks/blas_threads.py).
    It acts on the BLAS libraries threadpoolctl finds (numpy's OpenBLAS); torch and ONNX Runtime
    keep their own thread pools.
    """
    return threadpool_limits(limits=1, user_api="blas")


def stage_progress(progress: StageProgress | None, name: str) -> Callable[[int, int], None] | None:
    """``progress`` bound to stage ``name``: the ``(done, total)`` callback the engine and writers take."""
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)


class Timings(dict):
    """Seconds per stage; stages may run in several threads (co-registration beside prediction)."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 3)

    def timed(self, name: str, function: Callable[[], Any]) -> Any:
        """``function()`` timed as stage ``name`` (for work handed to a background thread)."""
        with self.stage(name):
            return function()


class Run:
    """One verb's run writing ``out_dir`` (module notes).

    Parameters
    ----------
    out_dir
        The output folder; must not exist unless ``overwrite``.
    kind
        The verb (``"detect"``, ``"damage"``...), recorded in the folder's marker.
    inputs
        Input paths (lists and None allowed): never inside a replaced folder, and watched for changes.
    resumable, resume
        Parts of the staging folder a later run may reuse, and whether to reuse them
        (:func:`deltacd.io.outputs.staged_output`).
    memory_hint
        The settings that lower the run's memory, named in an out-of-memory error.

    Raises
    ------
    OutputError
        At construction, when ``out_dir`` could not be published to (it exists, it holds an input...).
    """

    def __init__(self, out_dir: str | Path, *, kind: str, inputs: Iterable[Any] = (), overwrite: bool = False,
                 resumable: tuple[str, ...] = (), resume: bool = False, memory_hint: str | None = None):
        self.out_dir = Path(out_dir)
        self.kind = kind
        self.inputs = input_paths(*inputs)
        self.overwrite = overwrite
        self.resumable = resumable
        self.resume = resume
        self.memory_hint = memory_hint
        self.timings = Timings()
        self.started = time.perf_counter()
        self.staging: Path | None = None
        self.log: RunLog | None = None
        self._stack: ExitStack | None = None
        self._pending: list[Future] = []
        check_output(out_dir, overwrite=overwrite, inputs=self.inputs)

    @property
    def workdir(self) -> Path:
        """Scratch folder of the run, inside its staging folder; removed before the outputs are published."""
        assert self.staging is not None, "the run is not entered"
        return self.staging / "_work"

    def __enter__(self) -> Run:
        stack = ExitStack()
        try:
            stack.enter_context(one_blas_thread())
            stack.enter_context(gdal_env())
            self.staging = stack.enter_context(staged_output(
                self.out_dir, overwrite=self.overwrite, kind=self.kind, inputs=self.inputs,
                resumable=self.resumable, resume=self.resume, memory_hint=self.memory_hint))
            self.log = stack.enter_context(RunLog(self.staging))
            self._background = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"deltacd-{self.kind}"))
            self.workdir.mkdir(exist_ok=True)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._stack is not None
        if exc_type is not None:
            for future in self._pending:  # inside the run log: their warnings stay in it, not after the error
                future.cancel()
            for future in self._pending:
                if not future.cancelled():
                    future.exception()
        elif self.workdir.exists():
            shutil.rmtree(self.workdir)
        return bool(self._stack.__exit__(exc_type, exc, tb))

    def submit(self, name: str, function: Callable[[], Any]) -> Future:
        """Run ``function()`` in a background thread, timed as stage ``name``; waited for when the run ends."""
        future = self._background.submit(self.timings.timed, name, function)
        self._pending.append(future)
        return future

    def track(self, future: Future) -> Future:
        """Wait for ``future`` (started elsewhere) before the run ends, even when it fails."""
        self._pending.append(future)
        return future

    def record(self, inputs: dict[str, Any], **sections: Any) -> dict[str, Any]:
        """``run.json``: the header every run shares, then ``sections`` in order, then the timings."""
        self.timings["total"] = round(time.perf_counter() - self.started, 3)
        return {
            "deltacd_version": __version__,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            **environment(),
            "warnings": self.log.warnings if self.log else [],
            "inputs": inputs,
            **sections,
            "timings_s": dict(self.timings),
        }

    def write_record(self, record: dict[str, Any]) -> Path:
        """Write ``record`` as the run's ``run.json`` (strict JSON)."""
        assert self.staging is not None, "the run is not entered"
        return write_json(self.staging / RUN_RECORD, record)


__all__ = ["Run", "StageProgress", "Timings", "one_blas_thread", "stage_progress"]
