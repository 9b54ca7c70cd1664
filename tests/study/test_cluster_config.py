"""ray_cluster.yaml: valid for Ray's cluster launcher (its own validator, offline), and set up the
way `vcr-study launch` expects (ports, paths, the entry point, token authentication)."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from study.cluster import check_address
from study.store import default_tracking_uri
from study.tracking import check_tracking
from tests.helpers import ROOT
from vcrnet.errors import InputError
from vcrnet.features.stage import LOCAL_CACHE_VARIABLE

CONFIG = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())


def commands(*keys: str) -> str:
    return "\n".join(line for key in keys for line in CONFIG.get(key, []))


def command(key: str, program: str) -> str:
    """The one command of ``key`` that runs ``program``."""
    found = [line for line in CONFIG[key] if program in line]
    assert len(found) == 1, f"{key}: {program}: {found}"
    return found[0]


def option(text: str, name: str) -> str:
    """The value of ``--name=V`` or ``--name V`` in ``text`` (exactly one occurrence)."""
    found = re.findall(rf"{name}[= ](\S+)", text)
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def exported(name: str) -> str:
    found = re.findall(
        rf"export {name}=([^'\s]+)", commands("setup_commands", "head_setup_commands")
    )
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def test_rays_validator_accepts_it():
    validate_config(prepare_config(copy.deepcopy(CONFIG)))


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(bogus=1),
        lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5),
        lambda c: c.pop("provider"),
    ],
    ids=["unknown key", "fractional resource", "no provider"],
)
def test_rays_validator_rejects_a_broken_copy(break_it):
    broken = copy.deepcopy(CONFIG)
    break_it(broken)
    with pytest.raises((jsonschema.ValidationError, KeyError, ValueError)):
        validate_config(prepare_config(broken))


def test_head_runs_no_trials_and_workers_have_gpus():
    nodes = CONFIG["available_node_types"]
    assert nodes[CONFIG["head_node_type"]]["resources"] == {"CPU": 0}
    assert option(command("head_start_ray_commands", "ray start"), "--num-cpus") == "0"
    workers = [n for name, n in nodes.items() if name != CONFIG["head_node_type"]]
    assert workers and all(w["resources"].get("GPU", 0) >= 1 for w in workers)
    assert all(w["min_workers"] == 0 and w["max_workers"] >= 1 for w in workers)  # autoscaling
    assert "nvidia-cuda-mps-control -d" in commands("worker_start_ray_commands")  # packing


def test_workers_join_the_heads_port_with_token_authentication():
    head = command("head_start_ray_commands", "ray start")
    worker = command("worker_start_ray_commands", "ray start")
    port = option(head, "--port")
    assert option(worker, "--address") == f"$RAY_HEAD_IP:{port}"
    for start in (head, worker):
        assert "RAY_AUTH_MODE=token ray start" in start
    assert exported("RAY_AUTH_MODE") == "token"
    assert "~/.ray/auth_token" in CONFIG["file_mounts"].values()
    check_address(exported("RAY_ADDRESS"))  # what launch reads on the head


def test_project_is_installed_and_provides_the_entry_point():
    target = next(t for t, source in CONFIG["file_mounts"].items() if source == ".")
    assert f"pip install -q -e {target}" in commands("setup_commands")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vcr-study"] == "study.cli:main"


def test_results_home_is_on_the_shared_mount():
    mount = re.search(r"mount -t nfs4 .* (\S+)\)", commands("setup_commands").replace("\n", " "))
    assert mount, "no NFS mount in setup_commands"
    home = Path(exported("VCR_STUDY_HOME"))
    assert home.is_relative_to(mount.group(1))


def test_mlflow_server_is_the_store_launch_uses_bound_to_loopback():
    server = command("head_start_ray_commands", "mlflow server")
    home = Path(exported("VCR_STUDY_HOME"))
    assert option(server, "--backend-store-uri") == default_tracking_uri(home)
    assert option(server, "--artifacts-destination") == str(home / "mlartifacts")
    assert option(server, "--host") == "127.0.0.1"
    uri = exported("MLFLOW_TRACKING_URI")
    assert uri == f"http://127.0.0.1:{option(server, '--port')}"
    check_tracking(uri)  # a server: what launch accepts with a cluster


def test_a_local_store_is_refused_with_a_cluster():
    with pytest.raises(InputError, match="local MLflow store cannot serve a Ray cluster"):
        check_tracking("sqlite:////tmp/mlflow.db")


@pytest.mark.parametrize(
    "address", ["localhost", "10.0.0.5:port", "10.0.0.5:0", "http://10.0.0.5:6379", ":6379"]
)
def test_bad_addresses_are_refused(address):
    with pytest.raises(InputError, match="--address"):
        check_address(address)


def test_gpu_workers_read_the_cache_from_their_nvme():
    start = command("worker_start_ray_commands", "ray start")
    folder = re.search(rf"{LOCAL_CACHE_VARIABLE}=(\S+)\s+RAY_AUTH_MODE=token ray start", start)
    assert folder, start  # in the raylet's environment: every trial on the node inherits it
    setup = commands("worker_setup_commands")
    mount = re.search(r"sudo mount \S+ (/\S+);", setup)
    assert mount and Path(folder.group(1)).is_relative_to(mount.group(1))
    assert f"mkdir -p {folder.group(1)}" in setup
