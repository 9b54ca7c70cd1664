"""Cluster mode: joining a running Ray cluster, and the checks ``launch`` makes before a study's
trials may run on other nodes.

A trial reads the feature cache and writes its checkpoints by path, on whatever node Ray places
it, so both must be on storage that every node mounts at the same path (NFS, EFS, ...). Before
the study starts, a small task on each live node compares what it sees there with what the
driver sees; a node that cannot see them is named in the refusal. Tracking goes through the
driver (one process writes MLflow), but with a cluster the store must be a server that the head's
UI, ``best`` and ``rerun`` share: a local sqlite or file store is refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from study.uris import LOCAL_SCHEMES, is_local, redact
from vcrnet.errors import InputError

STORE_SCHEMES = (*LOCAL_SCHEMES, "http", "https", "postgresql", "mysql", "mssql", "databricks")
AUTH_HELP = (
    "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the "
    "cluster's token: `ray get-auth-token` on the head prints it"
)


def connect(address: str | None, temp_dir: str | None = None) -> None:
    """``ray.init``: a local Ray when ``address`` is None (its session folders under
    ``temp_dir``, default Ray's), else join the cluster there (checked by the caller:
    ``check_address``, ``check_reachable``)."""
    import ray

    kwargs = dict(
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=False,
        configure_logging=False,
    )
    if address is None:
        ray.init(**kwargs, **({"_temp_dir": temp_dir} if temp_dir else {}))
        return
    check_token(address)
    try:
        ray.init(address=address, **kwargs)
    except ray.exceptions.AuthenticationError as error:
        raise _refused(address, error) from None
    except (ConnectionError, TimeoutError, RuntimeError) as error:
        raise InputError(
            f"--address {address}: no Ray cluster to join there ({_first_line(error)})"
        ) from None


def check_token(address: str) -> None:
    """The cluster's GCS at ``HOST:PORT`` takes this driver's token (or needs none).

    One call, answered in ~10 ms. ``ray.init`` (Ray 2.60) does not tell a refused token from a
    GCS still starting: it retries 20 times a second apart, its C++ client printing a warning to
    stderr each time, and then raises "Failed to connect to Ray cluster" (measured: 21 s)."""
    if address == "auto" or address.startswith("ray://"):  # no GCS address to ask
        return
    import ray
    from ray._private.authentication.authentication_token_setup import (
        ensure_token_if_auth_enabled,
    )
    from ray._raylet import GcsClient  # what ray.init connects with (ray._private.node)

    # ray.init's own first check: without it, GcsClient with RAY_AUTH_MODE=token and no readable
    # token ends this process (a failed C++ check, exit 1, its message hidden below)
    try:
        ensure_token_if_auth_enabled(None, create_token_if_missing=False)
    except ray.exceptions.AuthenticationError as error:
        raise InputError(
            f"--address {address}: no token for the cluster ({error.message}); {AUTH_HELP}"
        ) from None
    try:
        with _quiet_stderr():  # the C++ client's warning on a refusal: the error says it all
            GcsClient(address=address, cluster_id=None)
    except ray.exceptions.AuthenticationError as error:
        raise _refused(address, error) from None
    except ray.exceptions.RpcError as error:  # something that is not a GCS listens (~40 s)
        raise InputError(
            f"--address {address}: no Ray cluster to join there ({_first_line(error)})"
        ) from None


def _refused(address: str, error: Exception) -> InputError:
    detail = getattr(error, "message", None) or _first_line(error)  # str() appends Ray's help
    return InputError(
        f"--address {address}: the cluster refused this driver's token ({detail}); {AUTH_HELP}"
    )


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: silences what C++ code writes there itself."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_address(address: str) -> None:
    """``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``; anything else gets one line."""
    if address == "auto":
        return
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise InputError(
            f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), "
            "ray://HOST:PORT or auto"
        )


def check_reachable(address: str) -> None:
    """Something listens at ``address`` (ray.init would wait minutes where nothing does)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise InputError(
            f"--address {address}: no Ray cluster answers there ({error.strerror or error})"
        ) from None


def live_nodes() -> list[dict]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


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


def check_shared(paths: dict[str, Path], writable: Path) -> None:
    """Refuse a study whose trial inputs (``paths``: option -> file or folder) or results folder
    (``writable``) some live node cannot see at the same path with the same content."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    writable.mkdir(parents=True, exist_ok=True)
    marker = writable / f".visible-{secrets.token_hex(8)}"
    marker.write_text(secrets.token_hex(16))
    expected = {
        **{option: fingerprint(path) for option, path in paths.items()},
        "results": marker.read_text(),
    }
    wanted = {**{option: str(path) for option, path in paths.items()}, "results": str(marker)}
    probe = ray.remote(num_cpus=0)(_probe)
    try:
        nodes = live_nodes()
        seen = ray.get(
            [
                probe.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ).remote(wanted)
                for node in nodes
            ],
            timeout=120,
        )
    finally:
        marker.unlink(missing_ok=True)
    for node, found in zip(nodes, seen, strict=True):
        for option, value in expected.items():
            if found[option] != value:
                where = wanted[option] if option != "results" else str(writable)
                label = option if option != "results" else "results home (VCR_STUDY_HOME)"
                raise InputError(
                    f"{label} {where}: not visible from Ray node {node['NodeManagerAddress']} "
                    f"({node['NodeID'][:12]}); put the feature cache and the results home on "
                    "storage every node mounts at the same path (e.g. NFS at /mnt/shared, "
                    "VCR_STUDY_HOME=/mnt/shared/vcr-study-runs)"
                )


def fingerprint(path: Path) -> list:
    """What a node must see of ``path``: every file under it with its size."""
    path = Path(path)
    if path.is_file():
        return [[path.name, path.stat().st_size]]
    if path.is_dir():
        return sorted(
            [str(p.relative_to(path)), p.stat().st_size] for p in path.rglob("*") if p.is_file()
        )
    return []


def _probe(wanted: dict[str, str]) -> dict:
    found = {}
    for option, path in wanted.items():
        if option == "results":
            marker = Path(path)
            found[option] = marker.read_text() if marker.is_file() else None
        else:
            found[option] = fingerprint(Path(path))
    return found


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
