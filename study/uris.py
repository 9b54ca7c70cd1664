"""Tracking URIs without their secrets: what may be shown, logged or saved; run references."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOCAL_SCHEMES = ("", "file", "sqlite")  # an MLflow store on this machine's disk
RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow's run ids: uuid4().hex


def is_model_ref(text: str) -> bool:
    """Whether ``text`` names an MLflow run's artifact: a run id or a ``runs:/`` URI."""
    return text.startswith("runs:/") or RUN_ID.fullmatch(text) is not None


def is_local(uri: str) -> bool:
    return urlsplit(uri).scheme in LOCAL_SCHEMES


def local_store_file(uri: str) -> Path | None:
    """The file or folder of a local MLflow store (``sqlite:////abs/path.db`` -> /abs/path.db,
    ``sqlite:///rel.db`` -> rel.db as SQLAlchemy reads it; ``file:///dir`` or a bare path ->
    the folder); None for a server or an in-memory database."""
    scheme = urlsplit(uri).scheme
    if scheme == "sqlite":
        path = uri.split("://", 1)[1][1:].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    if scheme in ("", "file"):
        return Path(uri.removeprefix("file://"))
    return None


def local_artifacts(uri: str) -> Path | None:
    """The folder of an MLflow artifact location on this disk (``file:///abs%20dir`` or a bare
    path -> /abs dir); None for a server's (``mlflow-artifacts:/``, ``s3://`` ...)."""
    parts = urlsplit(uri)
    return Path(unquote(parts.path)).absolute() if parts.scheme in ("", "file") else None


def redact(uri: str) -> str:
    """``uri`` without a password or token in it (for messages, params and tags)."""
    parts = urlsplit(uri)
    if parts.password is None and not parts.username:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def move_credentials_to_env(uri: str) -> str:
    """``uri`` with any ``user:password@`` taken out; they go to MLflow's own variables
    (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD) for this process, so that the URI can be
    saved with the study and shown, and no secret is written anywhere."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    if parts.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = parts.username
    if parts.password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = parts.password
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=host).geturl()
