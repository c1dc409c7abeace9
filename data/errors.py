"""The faults a user can make or fix, as one family of exceptions.

The `dvsa` command catches `DvsaError` once, at its top (`dvsa.scripts.cli`), and prints its message as one line
on stderr with no traceback (``dvsa --debug COMMAND ...`` shows it); the exit code is the error's `exit_code`:
1 for a runtime or data fault, 2 for a usage fault (a bad flag or override). Library code raises these, never
`SystemExit`; a notebook catches them like any exception.

    DvsaError          base class; exit code 1
    ├── DataError      bad input data: names the file (and line) and what is wrong with it
    ├── CheckpointError a missing, foreign, old or hollow checkpoint
    ├── OutputError    an output that cannot be written: names the path and the reason
    └── UsageError     a bad flag, value or override; exit code 2
        └── ConfigError a config override that names no field, or a value of the wrong type or range
"""
from __future__ import annotations


class DvsaError(Exception):
    """A fault the user can fix; its message is one line that names the file, flag or record."""

    exit_code = 1


class DataError(DvsaError, ValueError):
    """Bad input: the message names the file (and line, where there is one) and what is wrong with it."""

    def __init__(self, path: str, message: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class CheckpointError(DvsaError, ValueError):
    """A checkpoint that is missing, not dvsa's, of another kind or format version, or lacks required keys."""


class OutputError(DvsaError, OSError):
    """An output that cannot be written (read-only folder, a file where a folder should be, no space left)."""


class UsageError(DvsaError, ValueError):
    """A bad command-line flag or value."""

    exit_code = 2


class ConfigError(UsageError):
    """A config override that names no field, or a value the stage cannot take."""
