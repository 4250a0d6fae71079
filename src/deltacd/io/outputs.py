"""Output folders that appear complete or not at all, and never replace what deltacd did not make.

Every verb writes its results into a hidden staging folder beside the output folder
(``.OUT.XXXXXXXX.partial``) and renames it to ``OUT`` only when the run succeeded
(:func:`staged_output`). The rules, in the order they are checked:

1. One run at a time per output folder: a lock file ``.OUT.lock`` beside it, held with
   ``fcntl.flock`` for the whole run. The kernel releases it when the process dies, even by
   SIGKILL, so a killed run never blocks the next one; a second live run is refused at once.
2. An existing ``OUT`` is refused unless ``overwrite``; with ``overwrite`` it is replaced only when
   it is a deltacd output (it holds the :data:`MARKER` record a run writes), holds only files that
   run wrote, and neither is nor contains one of the run's inputs. Anything else is refused with
   the reason, and nothing is deleted.
3. Under the lock, staging folders of earlier runs on the same ``OUT`` (killed before they could
   clean up) are stale: those that carry deltacd's staging tag are removed, nothing else. A run
   that resumes (``resume``) keeps the newest one instead, and in it only what the killed run
   had completed.
4. The final rename fails if ``OUT`` appeared meanwhile (unless ``overwrite``, and then only a
   deltacd output is replaced); the old folder is removed only after the new one is in place.

Folders the run had to create above ``OUT`` are removed again when it fails.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deltacd.errors import DeltacdError, OutputError
from deltacd.io.faults import changed_input, input_states, machine_fault

try:  # POSIX; on other systems runs are not locked against each other
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

#: The record a completed run leaves in its output folder: what made it, and every file it wrote.
MARKER = ".deltacd-output.json"
#: Tag inside a staging folder: proves a ``.OUT.*.partial`` folder is deltacd's before it is cleaned up.
STAGING_TAG = ".deltacd-staging"
MARKER_FORMAT = "deltacd-output/1"


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _resolved(path: str | Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except OSError:  # pragma: no cover - broken symlink loops
        return _absolute(path)


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The output record of ``folder``, or None when deltacd did not make it.

    An output from before the record existed (a detect ``run.json``, a dataset ``manifest.json``
    or a ``train_record.json`` written by deltacd) counts as deltacd's, with an unknown file list.
    """
    try:
        record = json.loads((folder / MARKER).read_text())
        if isinstance(record, dict) and record.get("format") == MARKER_FORMAT:
            return record
    except (OSError, ValueError):
        pass
    for name, kind in _LEGACY_RECORDS.items():
        try:
            legacy = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(legacy, dict) and ("deltacd_version" in legacy or str(legacy.get("format", "")).startswith("deltacd")):
            return {"format": MARKER_FORMAT, "kind": kind, "files": None}
    return None


#: Records that outputs of deltacd 0.1.0 (before :data:`MARKER`) carry.
_LEGACY_RECORDS = {"run.json": "detect", "manifest.json": "dataset", "train_record.json": "train"}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def check_replaceable(out_dir: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """Raise :class:`OutputError` unless ``out_dir`` may be replaced by a new run.

    It must be a folder deltacd made (it holds :data:`MARKER`), hold no file the run did not
    write, and neither be nor contain one of ``inputs``.
    """
    out = _absolute(out_dir)
    if not out.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder; choose another output path (nothing was deleted)")
    real = _resolved(out)
    for item in inputs:
        source = _resolved(item)
        if source == real or real in source.parents:
            raise OutputError(
                f"{out_dir}: holds the input {item}; --overwrite never replaces a folder with inputs in it, "
                "choose another output folder (nothing was deleted)"
            )
    if not any(out.iterdir()):
        return  # an empty folder: replacing it loses nothing
    record = read_marker(out)
    if record is None:
        raise OutputError(
            f"{out_dir}: not a deltacd output folder (no {MARKER}); --overwrite replaces only folders deltacd made, "
            "choose another output folder or empty it yourself (nothing was deleted)"
        )
    if record.get("files") is not None:
        known = set(record["files"]) | {MARKER}
        # a subfolder that is itself a deltacd output (a report written into a run folder) is ours too
        nested = [p.parent.relative_to(out) for p in out.rglob(MARKER) if p.parent != out and read_marker(p.parent)]
        foreign = [f for f in _files(out) if f not in known and not any(Path(f).is_relative_to(n) for n in nested)
                   and not _sidecar_of(f, known)]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputError(
                f"{out_dir}: holds {len(foreign)} file(s) deltacd did not write ({shown}); move them out "
                "or choose another output folder (nothing was deleted)"
            )


def input_paths(*items: Any) -> list[Path]:
    """The file paths among ``items`` (paths, lists of paths, ``ARCH:PATH`` model specs; other values skipped)."""
    found: list[Path] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            found += input_paths(*item)
        elif isinstance(item, (str, Path)):
            text = str(item)
            path = Path(text.split(":", 1)[1]) if not Path(text).exists() and ":" in text[2:] else Path(text)
            found.append(path)
    return found


def check_output(out_dir: str | Path, *, overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Fail early, before any work, when a run could not publish to ``out_dir`` (see :func:`staged_output`)."""
    if os.path.lexists(_absolute(out_dir)):
        if not overwrite:
            raise OutputError(f"{out_dir}: output folder exists; pass --overwrite (overwrite=True) or choose another folder")
        check_replaceable(out_dir, [p for p in inputs if p is not None])


#: Files GIS software writes beside a raster it opened (statistics, overviews): ours when the raster is.
_SIDECARS = (".aux.xml", ".ovr", ".msk")


def _sidecar_of(name: str, known: set[str]) -> bool:
    return any(name.endswith(suffix) and name[: -len(suffix)] in known for suffix in _SIDECARS)


def write_marker(folder: Path, kind: str) -> None:
    """Record in ``folder`` that deltacd made it, with every file it holds now."""
    from deltacd._version import __version__

    files = [f for f in _files(folder) if f not in (MARKER, STAGING_TAG)]
    record = {
        "format": MARKER_FORMAT, "kind": kind, "deltacd_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"), "pid": os.getpid(), "files": files,
    }
    (folder / MARKER).write_text(json.dumps(record, indent=1))


class OutputLock:
    """An exclusive lock on one output path (``.OUT.lock`` beside it), held while a run writes it.

    Raises :class:`OutputError` on :meth:`acquire` when another live process holds it.
    """

    def __init__(self, out_dir: str | Path):
        out = _absolute(out_dir)
        self.out_dir = Path(out_dir)
        self.path = out.parent / f".{out.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        if fcntl is None:  # pragma: no cover
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _output_error(exc, self.path.parent, self.out_dir) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise OutputError(
                    f"{self.out_dir}: another deltacd run ({owner}) is writing this folder; wait for it to finish "
                    "or choose another output folder"
                ) from None
            try:  # the holder before us may have removed the file after we opened it: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before closing, so no one can lock the removed file after us
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def stale_staging(out_dir: str | Path) -> list[Path]:
    """Staging folders that killed runs left beside ``out_dir``, newest first; call it holding its :class:`OutputLock`.

    Only folders named ``.OUT.*.partial`` that carry :data:`STAGING_TAG` count: the lock proves
    no live run owns them, the tag that they are deltacd's.
    """
    out = _absolute(out_dir)
    found = [c for c in out.parent.glob(f".{out.name}.*.partial")
             if c.is_dir() and not c.is_symlink() and (c / STAGING_TAG).is_file()]
    return sorted(found, key=lambda c: c.stat().st_mtime, reverse=True)


def remove_stale_staging(out_dir: str | Path, *, keep: Path | None = None) -> list[Path]:
    """Remove the :func:`stale_staging` folders of ``out_dir`` (but ``keep``); call it holding its :class:`OutputLock`."""
    removed = []
    for candidate in stale_staging(out_dir):
        if candidate != keep:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
            log.info("removed %s, left by an interrupted run", candidate)
    return removed


def resumable_staging(out_dir: str | Path, parts: Sequence[str]) -> Path | None:
    """The newest stale staging folder of ``out_dir`` holding one of ``parts``, emptied of everything else.

    What a killed run had completed (its ``parts``, e.g. the finished blocks of detect) is kept
    for the new run to reuse; the rest of the folder, half-written by the killed run, is removed.
    """
    for candidate in stale_staging(out_dir):
        if any((candidate / part).exists() for part in parts):
            for item in candidate.iterdir():
                if item.name in parts or item.name == STAGING_TAG:
                    continue
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
            (candidate / STAGING_TAG).write_text(f"pid {os.getpid()}\n")
            log.info("resuming from %s, left by an interrupted run", candidate)
            return candidate
    return None


def publish(staging: Path, out_dir: str | Path, *, overwrite: bool, kind: str, inputs: Iterable[str | Path] = ()) -> Path:
    """Rename the complete ``staging`` folder to ``out_dir``; an old output is removed only afterwards."""
    out = _absolute(out_dir)
    (staging / STAGING_TAG).unlink(missing_ok=True)
    write_marker(staging, kind)
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; give it the usual permissions
    if os.path.lexists(out):
        if not overwrite:
            raise OutputError(
                f"{out_dir}: appeared while this run was working; its results were not kept, rerun with another "
                "output folder or --overwrite"
            )
        check_replaceable(out, inputs)
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".replaced", dir=out.parent))
        os.rename(out, trash / "old")
        os.rename(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
        return out
    try:
        os.rename(staging, out)  # unlike a file rename, this fails when a non-empty folder appeared meanwhile
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise OutputError(
                f"{out_dir}: appeared while this run was working; its results were not kept, rerun with another "
                "output folder or --overwrite"
            ) from exc
        raise
    return out


@contextmanager
def staged_output(
    out_dir: str | Path, *, overwrite: bool, kind: str = "output", inputs: Iterable[str | Path] = (),
    resumable: Sequence[str] = (), resume: bool = False, memory_hint: str | None = None,
) -> Iterator[Path]:
    """A staging folder for a run's outputs, renamed to ``out_dir`` when the block succeeds.

    Parameters
    ----------
    out_dir
        The output folder; must not exist unless ``overwrite``.
    overwrite
        Replace an existing ``out_dir``, if it is a deltacd output (module notes), once the
        new one is complete.
    kind
        What the run is (``"detect"``, ``"evaluate"`` ...), recorded in :data:`MARKER`.
    inputs
        The run's input files and folders: an output folder that is or contains one is never replaced.
    resumable, resume
        ``resumable``: names of parts of the staging folder that a run completes bit by bit and a
        later run can reuse (``("_blocks",)``). An interrupted run (Ctrl+C, SIGTERM) then leaves
        its staging folder for the next one; SIGKILL leaves it anyway. With ``resume`` the newest
        stale staging folder holding one of them is reused, only those parts kept
        (:func:`resumable_staging`); without one, the run starts afresh.
    memory_hint
        The settings that lower the run's memory, named when it runs out of memory.

    Raises
    ------
    OutputError
        ``out_dir`` exists (and ``overwrite`` is False, or it may not be replaced), another run
        is writing it, or its parent cannot be written (``no space left on ...`` when the disk is full).
    ResourceError, InputError
        A fault of the machine stopped the run (:func:`deltacd.io.faults.machine_fault`): no space,
        no permission, no memory, a lost network mount, an input changed while it was read.
    """
    inputs = [p for p in inputs if p is not None]
    check_output(out_dir, overwrite=overwrite, inputs=inputs)
    states = input_states(inputs)
    out = _absolute(out_dir)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _output_error(exc, out.parent, out_dir) from exc
    lock = OutputLock(out_dir)
    staging = None
    try:
        lock.acquire()
        staging = resumable_staging(out, resumable) if resume else None
        remove_stale_staging(out, keep=staging)
        if staging is None:
            try:
                staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
                (staging / STAGING_TAG).write_text(f"pid {os.getpid()}\n")
            except OSError as exc:
                raise _output_error(exc, out.parent, out_dir) from exc
        try:
            yield staging
            changed = changed_input(states)  # a run that read a file being rewritten is not published
            if changed is not None:
                raise changed
            publish(staging, out_dir, overwrite=overwrite, kind=kind, inputs=inputs)
        except Exception as exc:  # the machine's faults (full disk, lost mount, no memory...) in one line each
            fault = machine_fault(exc, folder=out.parent, out_dir=out_dir, inputs=states, memory_hint=memory_hint)
            if fault is None:
                raise
            raise fault from exc
    except BaseException as exc:
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        if staging is not None and interrupted and any((staging / part).exists() for part in resumable):
            exc.add_note(f"the completed part of the run is kept (in {staging}); run the same command with --resume "
                         "to continue from it")
        elif staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        lock.release()
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    lock.release()


def _output_error(exc: OSError, folder: Path, out_dir: str | Path) -> DeltacdError:
    fault = machine_fault(exc, folder=folder, out_dir=out_dir)
    if fault is not None:
        return fault
    reason = exc.strerror or str(exc)
    return OutputError(f"{out_dir}: cannot write in {folder} ({reason}); choose a writable output folder")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
