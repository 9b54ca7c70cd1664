"""``vcr-study ui``: the MLflow UI over the studies' store."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from study.cli.app import app
from vcrnet.errors import InputError


@app.command("ui")
def ui_command(
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 5000,
    host: Annotated[
        str, typer.Option(help="Address to bind; the default keeps the UI on this machine.")
    ] = "127.0.0.1",
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow store (default: the studies' sqlite store).", envvar="MLFLOW_TRACKING_URI"
        ),
    ] = None,
) -> None:
    """Serve the MLflow UI for the study store (Ctrl-C stops it).

    Example: vcr-study ui --port 5001
    """
    import subprocess

    from study import api, store, tracking

    uri = tracking.absolute_uri(tracking_uri or store.default_tracking_uri(store.home()))
    _check_port_free(host, port)
    artifacts = store.artifacts_root().as_uri()
    typer.echo(f"MLflow UI for {tracking.redact(uri)} at http://{host}:{port} (Ctrl-C to stop)")
    for name, link in api.study_links(uri, f"http://{host}:{port}"):
        typer.echo(f"  study {name}: {link}")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        artifacts,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    try:
        sys.exit(subprocess.call(command))
    except KeyboardInterrupt:
        sys.exit(0)


def _check_port_free(host: str, port: int) -> None:
    """Something already listening at ``host:port`` is one line, before the link is printed
    (``mlflow server`` would print its own failure after it, and the link would lead elsewhere)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise InputError(
                f"--port {port}: {host}:{port} cannot be served ({error.strerror}); choose "
                "another --port"
            ) from None
