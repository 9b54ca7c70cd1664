"""Errors for bad input: each message is one line that names the culprit."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input from the user (a file, an option, a value). ``str(err)`` is one line."""


class VCRDataError(InputError):
    """Bad VCR-format data. ``str(err)`` is ``FILE[:LINE]: [FIELD: ]problem``."""

    def __init__(
        self, path: str | Path, problem: str, line: int | None = None, field: str | None = None
    ):
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = problem if field is None else f"{field}: {problem}"
        super().__init__(f"{where}: {what}")
