"""A study as a SLURM job, on a real SLURM: munged, slurmctld and slurmd on this machine (one
node), ``cluster/slurm/vcr-study.sbatch`` submitted with ``sbatch``. The job starts the Ray
head, the MLflow server and the driver; a second job is requeued mid-study (``scontrol
requeue``) and its next run resumes the study: every trial and epoch exactly once.

Needs root and Debian's ``slurm-wlm`` and ``munge`` (``make test`` installs them when root, as it
does chromium); skipped otherwise. Every daemon started here is stopped by its process id.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study import store
from study.tracking import trial_runs
from tests.helpers import ROOT, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged")),
        reason="needs root, slurm-wlm and munge (make test installs them as root)",
    ),
]
SCRIPT = ROOT / "cluster" / "slurm" / "vcr-study.sbatch"
MUNGE_KEY = Path("/etc/munge/munge.key")


class Slurm:
    """munged, slurmctld and slurmd on this machine, configured under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: dict[str, subprocess.Popen] = {}

    def write_conf(self) -> None:
        host = socket.gethostname()
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        self.conf.write_text(
            f"""\
ClusterName=vcrtest
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.root / "munge.socket"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
SlurmUser=root
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root / "slurmd.pid"}
SlurmctldLogFile={self.root / "slurmctld.log"}
SlurmdLogFile={self.root / "slurmd.log"}
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=600
NodeName={host} CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )

    def start(self) -> None:
        self.write_conf()
        munge = self.root / "munge"
        munge.mkdir(mode=0o700)
        self._daemon(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.root / 'munge.socket'}",
                f"--key-file={MUNGE_KEY}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],  # fmt: skip
        )
        self._wait("munged's socket", lambda: (self.root / "munge.socket").exists())
        self._daemon("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._daemon("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait("the node idle", lambda: "idle" in self.run("sinfo", "-h", "-o", "%T"))

    def _daemon(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.out").open("w")
        self.daemons[name] = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait(self, what: str, ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, daemon in self.daemons.items():
                assert daemon.poll() is None, f"{name} exited: {self.log(name)}"
            assert time.monotonic() < deadline, f"{what}: not in {timeout:.0f} s"
            time.sleep(0.5)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.out"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def run(self, *argv: str) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def stop(self) -> None:
        for name in reversed(list(self.daemons)):
            daemon = self.daemons[name]
            if daemon.poll() is None:
                daemon.terminate()
                try:
                    daemon.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()

    def submit(self, output: Path, **variables: str) -> str:
        exports = ",".join(["ALL", *(f"{k}={v}" for k, v in variables.items())])
        done = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--nodes=1",
                f"--cpus-per-task={os.cpu_count()}",
                "--gpus-per-node=0",
                f"--output={output}",
                f"--export={exports}",
                str(SCRIPT),
            ],  # fmt: skip
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def state(self, job: str) -> str:
        out = self.run("scontrol", "show", "job", job)
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "")

    def wait_for(self, job: str, states: tuple[str, ...], output: Path, timeout: float = 900):
        deadline = time.monotonic() + timeout
        while (state := self.state(job)) not in states:
            assert state not in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"), (
                f"job {job} {state}: {output.read_text()[-3000:] if output.is_file() else ''}"
            )
            assert time.monotonic() < deadline, f"job {job} still {state} after {timeout:.0f} s"
            time.sleep(2)
        return state


@pytest.fixture(scope="module")
def slurm():
    root = Path(tempfile.mkdtemp(prefix="vcr-slurm-"))  # short: sockets live here
    cluster = Slurm(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _variables(home: Path, scratch: Path, synthetic_dir, cache, study: str, launch: str) -> dict:
    return {
        "VCR_STUDY_DIR": str(ROOT),
        "VCR_STUDY_HOME": str(home),
        "DATA": str(synthetic_dir),
        "CACHE": str(cache),
        "LOCAL_SCRATCH": str(scratch),
        "STUDY": study,
        "LAUNCH_ARGS": f"{launch} --image-size 256x128",
        "TRIAL_RESOURCES": "--cpus-per-trial 1 --gpus-per-trial 0",
        "RAY_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "MPS": "0",
    }


def _runs(home: Path, name: str):
    """The study's trial runs, read from its sqlite store (the job's MLflow server is gone)."""
    os.environ["VCR_STUDY_HOME"] = str(home)
    try:
        options, parent = store.load(name)
    finally:
        os.environ.pop("VCR_STUDY_HOME")
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return client, trial_runs(client, parent)


def _submit(slurm, tmp_path, synthetic_dir, synthetic_features, study: str, launch: str):
    """Submit the script for study ``study`` with ``launch``'s options; its job id, home, output
    file and node-local scratch (under the cluster's short root: Ray's sockets go under it)."""
    home, output, scratch = tmp_path / "home", tmp_path / "job.out", slurm.root / study
    scratch.mkdir()
    cache = synthetic_features.text.parent
    variables = _variables(home, scratch, synthetic_dir, cache, study, launch)
    return slurm.submit(output, **variables), home, output, scratch


def test_a_study_runs_as_a_slurm_job(slurm, tmp_path, synthetic_dir, synthetic_features):
    job, home, output, scratch = _submit(
        slurm, tmp_path, synthetic_dir, synthetic_features, "sl1",
        "--space smoke --trials 2 --epochs 2 --concurrent 2 --no-asha",  # every epoch, both
    )  # fmt: skip
    slurm.wait_for(job, ("COMPLETED",), output)
    text = output.read_text()
    assert "vcr-study exited with 0" in text, text[-3000:]
    assert "approach" in text and "dev_q2ar" in text  # launch's `best` table, from the job
    client, runs = _runs(home, "sl1")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    for run_id in runs["run_id"]:
        assert [m.step for m in client.get_metric_history(run_id, "val_q2ar")] == [1, 2]
    assert not list(scratch.glob("vcr-ray-*/")), "Ray's session folders were left"


def test_a_requeued_job_resumes_its_study_with_every_trial_once(
    slurm, tmp_path, synthetic_dir, synthetic_features
):
    job, home, output, scratch = _submit(
        slurm, tmp_path, synthetic_dir, synthetic_features, "sl2",
        "--space smoke --trials 4 --epochs 3 --concurrent 2 --no-asha",
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while "trials: 1 done" not in (output.read_text() if output.is_file() else ""):
        assert slurm.state(job) in ("PENDING", "RUNNING", "CONFIGURING"), output.read_text()
        assert time.monotonic() < deadline, "no trial finished in 600 s"
        time.sleep(1)
    _, before = _runs(home, "sl2")
    assert slurm.run("scontrol", "requeue", job).strip() == ""
    # SLURM holds a requeued job back for a while (its begin time moves ~2 minutes on): let it
    # start as soon as it is pending again, as a busy cluster would eventually
    slurm.wait_for(job, ("PENDING",), output, timeout=120)
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    slurm.wait_for(job, ("COMPLETED",), output, timeout=1200)
    text = output.read_text()
    assert "study sl2 exists: resuming it" in text and "vcr-study exited with 0" in text
    client, after = _runs(home, "sl2")
    assert len(after) == 4 and after["trial_id"].is_unique
    assert set(after["status"]) == {"FINISHED"}
    assert set(before["run_id"]) <= set(after["run_id"])  # the runs of before the requeue reused
    for run_id in after["run_id"]:  # every epoch once
        assert [m.step for m in client.get_metric_history(run_id, "val_q2ar")] == [1, 2, 3]
    assert not list(scratch.glob("vcr-ray-*/")), "Ray's session folders were left"
