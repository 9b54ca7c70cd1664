"""``vcr-study ui``: the MLflow UI over the studies' store."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from study.cli.app import app


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

    uri = tracking_uri or store.default_tracking_uri(store.home())
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
