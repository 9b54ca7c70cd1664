"""The ``vcr-study`` command: the shell over ``study.api`` and the rooms.

Each command body parses its options, calls one function of ``study.api`` or of a room, and
prints; it imports what it needs when it runs, so ``vcr-study --help`` starts without torch, Ray
or MLflow. The commands: ``data.py`` (``data synth|check|features|prepare``), ``model.py``
(``train|predict|evaluate``), ``studies.py`` (``launch|best|ablations|rerun|studies|delete``),
``ui.py``; the options several share: ``options.py``.

Known errors print one line: bad data or options exit with code 2, work that started and failed
(a study whose every trial failed) with 1; set ``VCR_STUDY_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from study.cli import data, model, studies, ui  # noqa: F401 - each adds its commands to app
from study.cli.app import app
from vcrnet.errors import InputError, RunFailed

__all__ = ["app", "main"]


def main() -> None:
    """The entry point: every bad input (a usage error too) is one line on stderr, exit code 2."""
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError (typer vendors click)
    warnings.showwarning = _one_line_warning
    try:
        code = app(standalone_mode=False, prog_name="vcr-study")
    except usage_error as err:  # bad options and arguments, as click words them
        command = err.ctx.command_path if err.ctx else "vcr-study"
        if not err.format_message():  # no command given: the help was shown
            sys.exit(2)
        typer.echo(f"{command}: error: {err.format_message()} (see {command} --help)", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("vcr-study: aborted", err=True)
        sys.exit(130)
    except InputError as err:
        if os.environ.get("VCR_STUDY_DEBUG"):
            raise
        typer.echo(f"vcr-study: error: {err}", err=True)
        sys.exit(2)
    except RunFailed as err:  # the work started and failed: not bad input
        if os.environ.get("VCR_STUDY_DEBUG"):
            raise
        typer.echo(f"vcr-study: error: {err}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"vcr-study: warning: {message}", err=True)
