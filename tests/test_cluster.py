"""A study across several Ray nodes on this machine: a head and a worker started with `ray start`
on loopback with token authentication, an MLflow server, and `vcr-study launch --address`.
Everything started here is stopped by its process group, also when a test fails."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from study.tracking import trial_runs
from tests.helpers import SMALL_SETTINGS, assert_same_features, free_port, wait_until_answers
from vcrnet.features import CachedVCRDataset, SplitFeatures, entry_paths, extract_splits

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@dataclass
class Cluster:
    root: Path
    env: dict
    address: str = ""
    tracking_uri: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("w")
        process = subprocess.Popen(
            argv, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )  # its own group: stopped as one
        self.processes[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(process.pid, s)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        time.sleep(0.5)
        try:  # daemons the group left behind
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)

    def live_nodes(self) -> int:
        probe = (
            f"import ray; ray.init(address={self.address!r}, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=120
        )
        return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout else 0

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.live_nodes() != count:
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited: {self.log(name)[-2000:]}"
            assert time.monotonic() < deadline, f"not {count} live Ray nodes in {timeout} s"
            time.sleep(1)

    def head_node_id(self) -> str:
        probe = (
            f"import ray; ray.init(address={self.address!r}, log_to_driver=False); "
            "print([n['NodeID'] for n in ray.nodes() if n['Alive'] and "
            "'node:__internal_head__' in n['Resources']][0])"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()[-1]

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def node_argv(self, cpus: int = 1) -> list[str]:
        return [
            str(BIN / "ray"),
            "start",
            f"--address={self.address}",
            f"--num-cpus={cpus}",
            "--disable-usage-stats",
            "--block",
        ]


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="vcr-cluster-"))  # short: Ray's socket paths live here
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN")
    }
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    c = Cluster(root, env)
    try:
        port = free_port()
        c.address = f"127.0.0.1:{port}"
        c.start(
            "head",
            [
                str(BIN / "ray"),
                "start",
                "--head",
                f"--port={port}",
                "--num-cpus=1",
                f"--temp-dir={root / 'ray'}",
                "--include-dashboard=false",
                "--disable-usage-stats",
                "--block",
            ],
        )
        c.wait_for_nodes(1)
        c.start("worker", c.node_argv())
        mlflow_port = free_port()
        c.tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        c.start(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "mlartifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
            ],
        )
        c.wait_for_nodes(2)
        wait_until_answers(f"{c.tracking_uri}/health", c.processes["mlflow"], "mlflow server")
        yield c
    finally:
        c.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def launch(cluster: Cluster, home: Path, synthetic_dir, cache, *args, timeout=600):
    env = {**cluster.env, "VCR_STUDY_HOME": str(home)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            "launch",
            "--space",
            "smoke",
            "--data",
            str(synthetic_dir),
            "--cache",
            str(cache),
            "--image-size",
            "256x128",
            "--address",
            cluster.address,
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_study_runs_across_nodes(cluster, tmp_path, synthetic_dir, synthetic_features):
    home, local = tmp_path / "home", tmp_path / "node-local"
    with_password = cluster.tracking_uri.replace("http://", "http://alice:s3cret-pw@")
    done = launch(
        cluster,
        home,
        synthetic_dir,
        synthetic_features.text.parent,
        "--name",
        "c1",
        "--trials",
        "4",
        "--epochs",
        "2",
        "--concurrent",
        "2",
        "--tracking-uri",
        with_password,
        "--local-cache",
        local,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # the trials read the cache from the node-local copy (one here: both nodes share this disk)
    staged = {p.name for p in local.iterdir() if (p / "manifest.json").is_file()}
    assert len(staged) == 4  # train and val, text and objects
    assert {synthetic_features.text.name, synthetic_features.objects.name} <= staged

    client = MlflowClient(cluster.tracking_uri)
    parent = json.loads((home / "studies" / "c1" / "study.json").read_text())["parent_run_id"]
    runs = trial_runs(client, parent)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    nodes = {client.get_run(r).data.tags["node_id"] for r in runs["run_id"]}
    assert len(nodes) >= 2, nodes  # trials ran on more than one node

    # no secret (the URI's password, the Ray token) in the output, params, tags, artifacts or
    # anything the study wrote
    secrets_ = ["s3cret-pw", (cluster.root / "auth_token").read_text()]
    written = [done.stdout, done.stderr]
    written += [
        p.read_text(errors="replace")
        for p in home.rglob("*")
        if p.is_file() and p.stat().st_size < 5_000_000 and p.suffix not in (".pt", ".npy")
    ]
    for run_id in [*runs["run_id"], parent]:
        run = client.get_run(run_id)
        written += [json.dumps(run.data.params), json.dumps(run.data.tags)]
        written += [
            Path(client.download_artifacts(run_id, a.path, str(tmp_path / run_id))).read_text()
            for a in client.list_artifacts(run_id)
            if not a.is_dir
        ]
    written += [
        p.read_text(errors="replace")
        for p in (cluster.root / "mlartifacts").rglob("*")
        if p.is_file()
    ]
    for secret in secrets_:
        assert not [w for w in written if secret in w]

    best = subprocess.run(
        [sys.executable, "-m", "study.cli", "best", "--name", "c1", "--json"],
        env={**cluster.env, "VCR_STUDY_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert best.returncode == 0, best.stderr[-2000:]
    assert {b["method"] for b in json.loads(best.stdout)} <= {"softmax", "gumbel", "teacher"}
    assert json.loads(best.stdout)
    # each approach's best weights went to the server; a notebook gets them by their URI,
    # downloaded once under the home
    first = next(b for b in json.loads(best.stdout) if b["model"])
    fetch = "import sys; from study import api; print(api.model_file(sys.argv[1]))"
    seen = []
    for _ in range(2):
        got = subprocess.run(
            [sys.executable, "-c", fetch, first["model"]],
            env={**cluster.env, "VCR_STUDY_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert got.returncode == 0, got.stderr[-2000:]
        path = Path(got.stdout.strip().splitlines()[-1])
        seen.append(path.stat().st_mtime_ns)
    assert path == home / "models" / first["run_id"] / "model" / "best.pt"
    assert seen[0] == seen[1]  # the second call read the file the first fetched
    assert torch.load(path, weights_only=True)["epoch"] >= 1

    # another home on the same tracking server cannot take the study's name (its trials would
    # mix with c1's), and is told so before any feature or trial
    other = launch(
        cluster,
        tmp_path / "other-home",
        synthetic_dir,
        synthetic_features.text.parent,
        "--name",
        "c1",
        "--tracking-uri",
        cluster.tracking_uri,
        timeout=120,
    )
    assert other.returncode == 2 and other.stderr.strip().count("\n") == 0, other.stderr
    assert "already has a study of that name" in other.stderr
    assert len(trial_runs(client, parent)) == 4


def test_features_are_extracted_on_the_worker_node(cluster, tmp_path, synthetic_dir):
    """``data features --address``: the shards run on the cluster's other node, not on the
    driver's, and make the features one process makes."""
    cache = tmp_path / "cache"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            "data",
            "features",
            str(synthetic_dir),
            "--cache",
            str(cache),
            "--split",
            "val",
            "--image-size",
            "256x128",
            "--address",
            cluster.address,
            "--gpus-per-worker",
            "0",
            "--cpus-per-worker",
            "1",
        ],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "val text: extracted" in done.stdout and "val objects: extracted" in done.stdout
    head = cluster.head_node_id()
    for manifest in cache.glob("val-*/manifest.json"):
        workers = json.loads(manifest.read_text())["extracted_on"]
        assert workers and head not in workers, (workers, head)
    local = tmp_path / "local"
    extract_splits(synthetic_dir, ("val",), local, SMALL_SETTINGS, progress=False)
    assert_same_features(
        CachedVCRDataset(SplitFeatures(*entry_paths(synthetic_dir, "val", local, SMALL_SETTINGS))),
        CachedVCRDataset(SplitFeatures(*entry_paths(synthetic_dir, "val", cache, SMALL_SETTINGS))),
    )


def test_a_local_store_is_refused_with_a_cluster(
    cluster, tmp_path, synthetic_dir, synthetic_features
):
    home = tmp_path / "home"
    done = launch(
        cluster, home, synthetic_dir, synthetic_features.text.parent, "--name", "c2", timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "local MLflow store cannot serve a Ray cluster" in done.stderr
    assert "--tracking-uri http://" in done.stderr
    assert not (home / "studies").exists()


@pytest.mark.parametrize("command", ["data features", "launch"])
def test_a_wrong_token_is_refused_in_one_line(cluster, tmp_path, synthetic_dir, command):
    """A driver whose token is not the cluster's: one line naming the token, at once (Ray's own
    ray.init retries the refusal for 20 s, a C++ warning on stderr each time, then says it
    failed to connect)."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    env.update(RAY_AUTH_TOKEN=secrets.token_hex(32), VCR_STUDY_HOME=str(home))
    argv = {
        "data features": ["data", "features", str(synthetic_dir), "--gpus-per-worker", "0"],
        "launch": [
            "launch",
            "--space",
            "smoke",
            "--data",
            str(synthetic_dir),
            "--name",
            "c5",
            "--tracking-uri",
            cluster.tracking_uri,
        ],
    }[command]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            *argv,
            "--cache",
            str(cache),
            "--image-size",
            "256x128",
            "--address",
            cluster.address,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("\n") == 1, done.stderr[-3000:]  # no traceback, no Ray warnings
    assert done.stderr.startswith(
        f"vcr-study: error: --address {cluster.address}: the cluster refused this driver's token"
    ), done.stderr
    assert "RAY_AUTH_TOKEN" in done.stderr and env["RAY_AUTH_TOKEN"] not in done.stderr
    assert not cache.exists() and not (home / "studies" / "c5" / "study.json").exists()


def test_a_cache_some_node_cannot_see_is_refused(
    cluster, tmp_path, synthetic_dir, synthetic_features
):
    cache = synthetic_features.text.parent
    hide = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -t tmpfs none "{cache}" && exec "$@"',
        "sh",
    ]
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0
    ):
        pytest.skip("needs unshare --mount (root) to give a node its own view of the disk")
    live = cluster.live_nodes()
    cluster.start("blind", hide + cluster.node_argv())
    try:
        cluster.wait_for_nodes(live + 1)
        home = tmp_path / "home"
        done = launch(
            cluster,
            home,
            synthetic_dir,
            cache,
            "--name",
            "c3",
            "--tracking-uri",
            cluster.tracking_uri,
            timeout=300,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert "not visible from Ray node" in done.stderr and str(cache) in done.stderr
        assert not (home / "studies").exists()
    finally:
        cluster.stop("blind")


def test_a_lost_worker_nodes_trial_is_retried_on_another(
    cluster, tmp_path, synthetic_dir, synthetic_features
):
    """Last in this module: it takes the worker node away."""
    home = tmp_path / "home"
    env = {**cluster.env, "VCR_STUDY_HOME": str(home)}
    log = (tmp_path / "launch.log").open("w")
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "study.cli",
            "launch",
            "--space",
            "smoke",
            "--data",
            str(synthetic_dir),
            "--cache",
            str(synthetic_features.text.parent),
            "--image-size",
            "256x128",
            "--address",
            cluster.address,
            "--tracking-uri",
            cluster.tracking_uri,
            "--name",
            "c4",
            "--trials",
            "2",
            "--epochs",
            "20",
            "--concurrent",
            "2",
            "--no-asha",
            "--max-failures",
            "2",
            "--set",
            "patience=100",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = MlflowClient(cluster.tracking_uri)
    try:
        deadline = time.monotonic() + 300
        while True:  # both trials running, each on its node, with a checkpoint
            assert driver.poll() is None, (tmp_path / "launch.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the two trials did not both start in 300 s"
            study = home / "studies" / "c4" / "study.json"
            if study.is_file():
                parent = json.loads(study.read_text())["parent_run_id"]
                runs = trial_runs(client, parent)
                if len(runs) == 2:
                    tags = {r: client.get_run(r).data.tags for r in runs["run_id"]}
                    if all("node_id" in t for t in tags.values()):
                        break
            time.sleep(1)
        before = {r: t["node_id"] for r, t in tags.items()}
        assert len(set(before.values())) == 2, before
        cluster.stop("worker", signal.SIGKILL)  # the node's raylet and its trial, at once
        assert driver.wait(timeout=600) == 0, (tmp_path / "launch.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    runs = trial_runs(client, parent)
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    moved = [r for r in runs["run_id"] if client.get_run(r).data.tags.get("retries")]
    assert len(moved) == 1  # the lost node's trial, retried ...
    after = client.get_run(moved[0]).data.tags["node_id"]
    assert after != before[moved[0]]  # ... on the node that is left
    steps = [m.step for m in client.get_metric_history(moved[0], "val_q2ar")]
    assert steps == list(range(1, 21))  # from its checkpoint: no epoch lost or repeated
