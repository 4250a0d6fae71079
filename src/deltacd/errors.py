"""Exceptions raised for bad input; each message names the file or setting and the fix.

Every exception derives from :class:`DeltacdError` and from the matching built-in, so
callers can catch either. The CLI turns a :class:`DeltacdError` into one line on stderr and
exit code 1.
"""

from __future__ import annotations


class DeltacdError(Exception):
    """Base class of every error deltacd raises on purpose."""


class InputError(DeltacdError, ValueError):
    """An input (file, setting, value) is unusable as given."""


class MissingInputError(DeltacdError, FileNotFoundError):
    """A file or folder that was named does not exist."""


class OutputError(DeltacdError, OSError):
    """The output location exists already or cannot be written."""


class ResourceError(DeltacdError, OSError):
    """The machine cannot do what the run asks: no space, no permission, no memory, no GPU, a file system gone."""


class OfflineError(DeltacdError, RuntimeError):
    """Weights or data would have to be downloaded, and no local file was given."""


class MissingDependencyError(DeltacdError, ImportError):
    """An optional part of deltacd is used without the packages it needs (``deltacd[learn]``)."""


class DeltacdWarning(UserWarning):
    """Something the user should know about a run that still completed (recorded in run.json)."""
