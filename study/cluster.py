"""Joining Ray, and the checks a study makes before its trials may run on other nodes.

``join`` is the one way in: a local Ray, or a running cluster (its address checked, something
listening there, this driver's token taken, then ``ray.init``). A trial reads the feature cache and
writes its checkpoints by path, on whatever node Ray places it, so both must be on storage that
every node mounts at the same path (NFS, EFS, ...). Before the study starts, a small task on each
live node compares what it sees there with what the driver sees (``check_shared``); a node that
cannot see them is named in the refusal. Imports Ray only; nothing else of study/.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
from pathlib import Path

from vcrnet.errors import InputError, first_line

__all__ = [
    "AUTH_HELP",
    "check_address",
    "check_joinable",
    "check_shared",
    "fingerprint",
    "fits",
    "join",
    "largest",
    "largest_node",
    "live_nodes",
    "why_waiting",
]

AUTH_HELP = (
    "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the "
    "cluster's token: `ray get-auth-token` on the head prints it"
)


def join(address: str | None = None, temp_dir: str | None = None) -> None:
    """``ray.init``: a local Ray when ``address`` is None (its session folders under
    ``temp_dir``, default Ray's), else the cluster there, once ``check_joinable`` passes."""
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
    check_joinable(address)
    try:
        ray.init(address=address, **kwargs)
    except ray.exceptions.AuthenticationError as error:
        raise _refused(address, error) from None
    except (ConnectionError, TimeoutError, RuntimeError) as error:
        raise InputError(
            f"--address {address}: no Ray cluster to join there ({first_line(error)})"
        ) from None


def check_joinable(address: str) -> None:
    """A cluster at ``address`` this driver can join: ``HOST:PORT``, ``ray://HOST:PORT`` or
    ``auto``; something listening there; its token taken. Seconds, where ``ray.init`` would wait
    minutes; run before work that takes long (feature extraction), and again by ``join``."""
    check_address(address)
    _check_reachable(address)
    _check_token(address)


def _check_token(address: str) -> None:
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
            f"--address {address}: no Ray cluster to join there ({first_line(error)})"
        ) from None


def _refused(address: str, error: Exception) -> InputError:
    detail = getattr(error, "message", None) or first_line(error)  # str() appends Ray's help
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


def _check_reachable(address: str) -> None:
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


def fits(request: dict[str, float]) -> bool:
    """Whether some live node of the joined Ray has every resource of ``request`` (in total,
    busy or not): where none does, a task asking for it waits for a node that may never come."""
    return any(
        all(node["Resources"].get(k, 0) >= v for k, v in request.items() if v > 0)
        for node in live_nodes()
    )


def why_waiting(request: dict[str, float]) -> str | None:
    """Why a task asking for ``request`` cannot start on the joined Ray now, in words (None: it
    can, or Ray is not running here)."""
    import ray

    if not ray.is_initialized():
        return None
    asked = _amounts({k: v for k, v in request.items() if v > 0})
    if not fits(request):
        return f"each asks {asked}; no node has that (the largest: {largest_node()})"
    free = ray.available_resources()
    if any(free.get(k, 0) < v for k, v in request.items() if v > 0):
        busy = {k: free.get(k, 0) for k in request if request[k] > 0}
        return f"each asks {asked}; free now: {_amounts(busy)}"
    return None


def _amounts(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "nothing"


def largest() -> tuple[float, float]:
    """The most CPUs and the most GPUs a live node of the joined Ray has."""
    nodes = [node["Resources"] for node in live_nodes()] or [{}]
    return max(n.get("CPU", 0) for n in nodes), max(n.get("GPU", 0) for n in nodes)


def largest_node() -> str:
    """``largest()`` for a message: ``8 CPUs, 1 GPUs``."""
    cpus, gpus = largest()
    return f"{cpus:g} CPUs, {gpus:g} GPUs"


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
