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


def not_utf8(path: str | Path) -> VCRDataError:
    """``FILE:LINE: not UTF-8``, naming the file's first line that does not decode (for a text
    reader's ``UnicodeDecodeError``: a stray Latin-1 byte, or a binary file)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):  # b"\n" is never inside a UTF-8 sequence
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return VCRDataError(path, "not UTF-8", line=number)
    return VCRDataError(path, "not UTF-8")


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of ``str(error)``, stripped (else the exception's type name); cut
    to ``limit`` characters ending in "..." where one is given (a table's cell): a one-line
    summary of any error."""
    text = next((s.strip() for s in str(error).splitlines() if s.strip()), type(error).__name__)
    return text if limit is None or len(text) <= limit else text[: max(limit - 3, 0)] + "..."


class RunFailed(RuntimeError):
    """Work that started and could not be done (every trial of a study failed): ``str(err)`` is
    one line, with where the details are. The CLI exits with code 1 (bad input is 2)."""
