"""Faults of the machine, told in one line: a full disk, no permission, an input changed under the run, no memory,
a network file system that stopped answering.

:func:`machine_fault` looks at an exception a run ended with and, when the cause is the machine rather than
a bug, returns the :class:`~deltacd.errors.DeltacdError` to raise instead: one line naming the folder, file or
setting, and the fix. It is called in one place, where every verb's staged output ends
(:func:`deltacd.io.outputs.staged_output`), so detect, damage, evaluate, compare, study steps, training and
reports all report these faults alike, after their staging folder was removed and their lock released.

GDAL reports a full disk as ``Write failed. See previous exception for details.`` or, once a half-written
TIFF is read back, ``... not recognized as being in a supported file format``: neither names the cause, so a
GDAL error is read as a full disk when the output's file system has less than :data:`NEARLY_FULL` bytes free.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from deltacd.errors import DeltacdError, InputError, ResourceError

#: Below this many free bytes on the output's file system a failed GDAL write is taken as a full disk.
NEARLY_FULL = 8 * 2**20
#: errno values of a network file system (NFS, SMB, sshfs) that stopped answering or lost a file handle.
NETWORK_ERRNOS = frozenset({errno.ESTALE, errno.EIO, errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH,
                            errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED, errno.EREMOTEIO})
PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True)
class InputState:
    """Size and modification time of an input file when a run started: a later difference means it changed."""

    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> InputState | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return cls(path, stat.st_size, stat.st_mtime_ns) if path.is_file() else None

    def change(self) -> str | None:
        """How the file differs from this state now ("removed", "truncated ...", "rewritten"), or None."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return "removed"
        except OSError:
            return None
        if stat.st_size < self.size:
            return f"truncated from {self.size} to {stat.st_size} bytes"
        if stat.st_size != self.size or stat.st_mtime_ns != self.mtime_ns:
            return "rewritten"
        return None


def input_states(inputs: Iterable[str | Path]) -> list[InputState]:
    """The :class:`InputState` of every input file (folders: the files directly in them, hidden ones aside:
    a run's own lock and staging folders may sit in an input folder)."""
    states = []
    for item in inputs:
        path = Path(item)
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
        states += [s for s in map(InputState.of, files) if s is not None]
    return states


def changed_input(inputs: Iterable[InputState]) -> InputError | None:
    """The error for the first input that changed since its state was taken, or None when none did."""
    for state in inputs:
        change = state.change()
        if change:
            return InputError(f"{state.path}: {change} while the run was reading it; wait until the file is complete "
                              "(a copy or download still running?) and run again")
    return None


def is_disk_full(exc: BaseException) -> bool:
    """True for an error that says the disk (or quota) is full, from Python or from GDAL."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    return "no space left on device" in str(exc).lower()


def free_bytes(folder: Path) -> int | None:
    """Bytes free to this user on the file system of ``folder`` (or its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        try:
            stat = os.statvfs(candidate)
        except OSError:
            continue
        return stat.f_bavail * stat.f_frsize
    return None


def machine_fault(exc: BaseException, *, folder: Path, out_dir: str | Path, inputs: Iterable[InputState] = (),
                  memory_hint: str | None = None) -> DeltacdError | None:
    """The one-line error for ``exc`` when the machine caused it (module notes), else None.

    Parameters
    ----------
    folder
        Where the run was writing (the output's parent folder).
    out_dir
        The output folder as the user named it.
    inputs
        The inputs' states when the run started (:func:`input_states`).
    memory_hint
        The settings that lower memory use, for an out-of-memory error ("--tile-size (now 1024) or --batch-size").
    """
    if isinstance(exc, DeltacdError):
        return None
    chain = list(_chain(exc))
    changed = changed_input(inputs)  # a fact, checked first: a read error after an input changed is that change
    if changed is not None:
        return changed
    if any(is_disk_full(e) for e in chain) or (_from_gdal(chain) and (free_bytes(folder) or 0) < NEARLY_FULL):
        free = free_bytes(folder)
        left = f" ({free / 2**20:.1f} MiB free)" if free is not None else ""
        return ResourceError(f"no space left on {folder}{left}; free some space or choose another output folder "
                             f"than {out_dir}, then run again")
    for e in chain:
        # numpy reports some failed allocations as "could not be made C-contiguous" (seen under prlimit --as)
        if isinstance(e, MemoryError) or any(s in str(e).lower() for s in ("out of memory", "could not be made c-contiguous")):
            how = memory_hint or "smaller inputs or a machine with more memory"
            return ResourceError(f"out of memory while running; lower {how}, or use a machine with more memory")
    for e in chain:
        if isinstance(e, OSError) and e.errno in PERMISSION_ERRNOS:
            where = e.filename or folder
            return ResourceError(f"{where}: no permission to write ({e.strerror}); choose a writable output folder "
                                 f"than {out_dir}")
        if isinstance(e, OSError) and e.errno in NETWORK_ERRNOS:
            where = e.filename or folder
            return ResourceError(f"{where}: the file system stopped answering ({e.strerror}); check the network "
                                 "mount, then run again (detect --resume keeps the blocks already done)")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _from_gdal(chain: list[BaseException]) -> bool:
    """True when an error in the chain comes from GDAL (rasterio's and pyogrio's error types)."""
    return any(type(e).__module__.split(".")[0] in ("rasterio", "pyogrio", "fiona") for e in chain)


__all__ = ["InputState", "changed_input", "free_bytes", "input_states", "is_disk_full", "machine_fault"]
