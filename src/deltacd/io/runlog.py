"""The log and the warnings of one run: ``deltacd.log`` in its output folder, and a list for run.json.

:class:`RunLog` is entered around a run whose outputs are staged in ``folder``. It writes
deltacd's log (INFO and above, every module) and every warning raised meanwhile to
``folder/deltacd.log``, and keeps deltacd's own warnings (those raised from deltacd's code, and
WARNING records of its loggers) so the run record can list them. Warnings are held back while the
run works and raised again once it succeeded, so the caller sees them (the CLI prints each on one
line) but a failed run reports only its error.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from deltacd.errors import DeltacdWarning

LOG_FILE = "deltacd.log"
_PACKAGE = str(Path(__file__).resolve().parents[1])


#: Warnings about a library's API (a deprecation seen from deltacd's code): notes for deltacd's developers, not
#: about the run; they go to deltacd.log but not to run.json, whose warnings the report shows the analyst.
_LIBRARY_NOTICES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def is_ours(message: warnings.WarningMessage) -> bool:
    """True for a warning deltacd raised (its category, or a warning issued from deltacd's code), a library's
    deprecation notice excepted (:data:`_LIBRARY_NOTICES`)."""
    if issubclass(message.category, DeltacdWarning):
        return True
    return str(message.filename).startswith(_PACKAGE) and not issubclass(message.category, _LIBRARY_NOTICES)


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


class RunLog:
    """Log file and warnings of a run (module notes). ``warnings`` lists deltacd's, without repeats."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOG_FILE
        self._messages: list[str] = []
        self._caught: list[warnings.WarningMessage] = []
        self._logger = logging.getLogger("deltacd")

    @property
    def warnings(self) -> list[str]:
        ours = [str(w.message) for w in self._caught if is_ours(w)] + self._messages
        return list(dict.fromkeys(ours))

    def warn(self, message: str) -> None:
        """Raise a :class:`DeltacdWarning` (held back until the run ends, like every other)."""
        warnings.warn(message, DeltacdWarning, stacklevel=2)

    def __enter__(self) -> RunLog:
        self._file = logging.FileHandler(self.path, encoding="utf-8")
        self._file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._file.setLevel(logging.INFO)
        self._collect = _Collect(self._messages)
        self._level = self._logger.level
        if self._logger.getEffectiveLevel() > logging.INFO:
            self._logger.setLevel(logging.INFO)  # the file gets INFO; console handlers keep their own level
        self._logger.addHandler(self._file)
        self._logger.addHandler(self._collect)
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("default")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._catcher.__exit__(None, None, None)
        for message in self._caught:
            self._logger.removeHandler(self._collect)  # a re-logged warning is not collected twice
            self._file.handle(logging.LogRecord("deltacd", logging.WARNING, str(message.filename), message.lineno,
                                                f"{message.category.__name__}: {message.message}", None, None))
        self._logger.removeHandler(self._collect)
        self._logger.removeHandler(self._file)
        self._file.close()
        self._logger.setLevel(self._level)
        if exc_type is None:
            for message in self._caught:
                warnings.warn_explicit(message.message, message.category, message.filename, message.lineno)
