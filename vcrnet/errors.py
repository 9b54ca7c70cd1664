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


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first non-empty line of ``str(error)``, stripped (else the exception's type name), cut
    to ``limit`` characters ending in "...": a one-line summary of any error for a log or a
    table."""
    text = next((s.strip() for s in str(error).splitlines() if s.strip()), type(error).__name__)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."
