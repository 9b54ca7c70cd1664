"""The ``vcr-study`` Typer app and its ``data`` group; each command module adds its commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Hyperparameter studies of joint answer-and-rationale models on VCR.",
)
data_app = typer.Typer(
    no_args_is_help=True, help="VCR-format data: generate, check, extract features."
)
app.add_typer(data_app, name="data")
