"""Tracking stores: their URIs without secrets (what may be shown, logged or saved), where a
local one lies on disk, the checks a URI passes before a study uses it, and the one way to open a
store for reading (``open_client``: a read never creates a sqlite file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from vcrnet.errors import InputError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

LOCAL_SCHEMES = ("", "file", "sqlite")  # an MLflow store on this machine's disk
STORE_SCHEMES = (*LOCAL_SCHEMES, "http", "https", "postgresql", "mysql", "mssql", "databricks")


def open_client(uri: str) -> MlflowClient | None:
    """A client to read the store at ``uri``, checked first: a sqlite file that is not there is
    not created (None), a server that does not answer is one line at once (not minutes of
    retries)."""
    from mlflow.tracking import MlflowClient

    if urlsplit(uri).scheme == "sqlite":
        path = local_store_file(uri)
        if path is not None and not path.is_file():
            return None
    else:
        check_store(uri)
    return MlflowClient(uri)


def writing_client(uri: str) -> MlflowClient:
    """A client that writes to the store at ``uri`` (a local one is made if it is not there yet;
    ``check_store`` first)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def check_store(tracking_uri: str) -> None:
    """A tracking URI that MLflow can use, and, for a server, one that answers now."""
    import urllib.error
    import urllib.request

    scheme = urlsplit(tracking_uri).scheme
    if scheme not in STORE_SCHEMES:
        raise InputError(
            f"--tracking-uri {redact(tracking_uri)}: unsupported scheme "
            f"{scheme!r}; use sqlite:////ABSOLUTE/PATH.db or http://HOST:PORT"
        )
    if scheme in ("http", "https"):
        try:
            urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10).close()
        except urllib.error.HTTPError:
            pass  # a server answered (one behind authentication may say 401 here)
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise InputError(
                f"--tracking-uri {redact(tracking_uri)}: no MLflow server answers there ({reason})"
            ) from None


def check_tracking(tracking_uri: str) -> None:
    """A cluster's study is tracked by an MLflow server, not a store on the driver's disk."""
    if is_local(tracking_uri):
        raise InputError(
            f"--tracking-uri {redact(tracking_uri)}: a local MLflow store cannot serve a Ray "
            "cluster; start `mlflow server --host 127.0.0.1 --port 5000` on the head (as "
            "ray_cluster.yaml does) and pass --tracking-uri http://127.0.0.1:5000"
        )


def absolute_uri(uri: str) -> str:
    """A local store's URI with an absolute path (``sqlite:///x.db`` is relative to the working
    directory, so a study launched from one folder would find no store from another); others as
    they are."""
    scheme = urlsplit(uri).scheme
    path = local_store_file(uri)
    if path is None or path.is_absolute():
        return uri
    if scheme == "sqlite":
        query = uri.partition("?")[2]
        return f"sqlite:///{path.absolute()}" + (f"?{query}" if query else "")
    return path.absolute().as_uri() if scheme == "file" else str(path.absolute())


def store_exists(uri: str) -> bool:
    """A tracking server, or a local store already made (looking creates a sqlite file)."""
    path = local_store_file(uri)
    return path is None or path.exists()


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
