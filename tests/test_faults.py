"""Faults injected into real studies (local Ray, num_cpus=2, MLflow sqlite): a trial's process
SIGKILLed mid-training, a checkpoint truncated under a trial, and 8 concurrent trials reporting
every step. The driver-kill fault is tests/test_study_resume.py; the lost worker node is
tests/test_cluster.py; an interrupted feature extraction is tests/vcrnet/test_features.py."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study import store
from study.tracking import trial_runs

pytestmark = pytest.mark.slow

ONE_TRIAL = """\
description: one trial, long enough to be killed half-way
fixed: {epochs: 12, batch_size: 4, preset: tiny, lr: 3.0e-3, patience: 100}
trials:
  - {method: softmax}
"""
TWO_TRIALS = """\
description: two trials, one at a time
fixed: {epochs: 8, batch_size: 4, preset: tiny, lr: 3.0e-3, patience: 100}
trials:
  - {method: softmax}
  - {method: teacher, correct_answer_rate: 1.0}
"""


@pytest.fixture
def study_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def trial_pids(name: str) -> list[int]:
    """The Ray worker processes running a trial of study ``name`` now (a trial works in a folder
    of its experiment: that tells them from any other Ray's on this machine)."""
    found = subprocess.run(["pgrep", "-f", "ray::ImplicitFunc"], capture_output=True, text=True)
    pids = []
    for pid in map(int, found.stdout.split()):
        try:
            if f"/{name}/" in os.readlink(f"/proc/{pid}/cwd"):
                pids.append(pid)
        except OSError:
            continue
    return pids


def checkpoints(name: str) -> list[Path]:
    """The checkpoints study ``name`` keeps now (one a running trial)."""
    return sorted(store.experiment_dir(name).glob("*/checkpoint_*/checkpoint.pt"))


def checkpointed(name: str) -> int:
    """How many checkpoints a trial of study ``name`` has reported at most (the kept one's
    number, from 0)."""
    return max(
        (int(p.parent.name.removeprefix("checkpoint_")) + 1 for p in checkpoints(name)), default=0
    )


class Saboteur(threading.Thread):
    """Waits until a trial of the study has reported ``after`` checkpoints, then does ``act``
    once (in a thread, while ``launch`` blocks the test)."""

    def __init__(self, name: str, after: int, act):
        super().__init__(daemon=True)
        self.name_, self.after, self.act = name, after, act
        self.done, self.error = False, None

    def run(self) -> None:
        deadline = time.monotonic() + 300
        try:
            while checkpointed(self.name_) < self.after:
                if time.monotonic() > deadline:
                    raise TimeoutError("no checkpoint in 300 s")
                time.sleep(0.05)
            self.act()
            self.done = True
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.error = error


def _launch(cli, tmp_path, synthetic_dir, synthetic_features, name, space_text, *args):
    space = tmp_path / f"{name}.yaml"
    space.write_text(space_text)
    return cli(
        "launch",
        "--name",
        name,
        "--space",
        space,
        "--data",
        synthetic_dir,
        "--cache",
        synthetic_features.text.parent,
        "--image-size",
        "256x128",
        *args,
    )


def test_a_trial_killed_mid_training_resumes_from_its_checkpoint(
    ray_local, study_home, cli, tmp_path, synthetic_dir, synthetic_features
):
    def kill_the_trial():
        pids = trial_pids("f1")
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)

    saboteur = Saboteur("f1", 2, kill_the_trial)
    saboteur.start()
    code, out, err = _launch(
        cli, tmp_path, synthetic_dir, synthetic_features, "f1", ONE_TRIAL, "--max-failures", "2"
    )
    saboteur.join(timeout=10)
    assert saboteur.done, saboteur.error
    assert code == 0, err
    options, parent = store.load("f1")
    client = MlflowClient(store.tracking_uri(options))
    runs = trial_runs(client, parent)
    assert len(runs) == 1  # one run, though the trial ran twice
    run = client.get_run(runs["run_id"].iloc[0])
    assert run.info.status == "FINISHED" and run.data.tags["final_status"] == "COMPLETED"
    assert run.data.tags["retries"] == "1"
    for key in ("val_q2ar", "train_loss", "epoch_seconds"):  # no gap, no repeat
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == list(range(1, 13)), (key, steps)


def test_a_truncated_checkpoint_fails_its_trial_with_the_reason_and_the_study_goes_on(
    ray_local, study_home, cli, tmp_path, synthetic_dir, synthetic_features
):
    cut: list[Path] = []

    def truncate_then_kill():
        pids = trial_pids("f2")
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGSTOP)  # no new checkpoint while the saved ones are cut
        for path in checkpoints("f2"):
            path.write_bytes(path.read_bytes()[:1000])
            cut.append(path)
        os.kill(pids[0], signal.SIGKILL)

    saboteur = Saboteur("f2", 2, truncate_then_kill)
    saboteur.start()
    code, out, err = _launch(
        cli,
        tmp_path,
        synthetic_dir,
        synthetic_features,
        "f2",
        TWO_TRIALS,
        "--concurrent",
        "1",
        "--max-failures",
        "1",
    )
    saboteur.join(timeout=10)
    assert saboteur.done, saboteur.error
    assert code == 0, err
    assert "1 failed" in out
    options, parent = store.load("f2")
    client = MlflowClient(store.tracking_uri(options))
    runs = trial_runs(client, parent).set_index("trial_id")
    assert len(runs) == 2
    victim = {t for t in runs.index for path in cut if f"_{t}_" in path.parent.parent.name}
    assert len(victim) == 1, (victim, cut)
    failed = client.get_run(runs.loc[victim.pop(), "run_id"])
    assert failed.info.status == "FAILED" and failed.data.tags["final_status"] == "FAILED"
    assert "checkpoint.pt: not a readable checkpoint" in failed.data.tags["error"]
    assert sorted(runs["status"]) == ["FAILED", "FINISHED"]  # the study went on


def test_eight_concurrent_trials_reporting_every_step_lose_no_metric_point(
    ray_local, study_home, tmp_path
):
    from types import SimpleNamespace

    from ray import tune

    from study import tracking

    steps = 40

    def chatty(config):
        for step in range(1, steps + 1):
            tune.report(
                {"epoch": step, "val_q2ar": config["x"] * step / steps, "train_loss": 1.0 / step}
            )

    client = MlflowClient(store.default_tracking_uri(store.home()))
    parent = tracking.create_study(client, "load", store.home(), store.artifacts_dir("load"))
    tracker = tracking.MLflowTracker(
        client.tracking_uri,
        parent,
        SimpleNamespace(params=lambda config: {"method": "softmax", "epochs": steps, **config}),
        "val_q2ar",
    )
    tuner = tune.Tuner(
        tune.with_resources(chatty, {"cpu": 0.25}),
        param_space={"x": tune.grid_search([i / 8 for i in range(1, 9)])},
        tune_config=tune.TuneConfig(max_concurrent_trials=8),
        run_config=tune.RunConfig(
            name="load", storage_path=str(store.storage_root()), callbacks=[tracker], verbose=0
        ),
    )
    grid = tuner.fit()
    assert not grid.errors
    runs = trial_runs(client, parent)
    assert len(runs) == 8 and set(runs["status"]) == {"FINISHED"}
    points = {
        key: sum(len(client.get_metric_history(r, key)) for r in runs["run_id"])
        for key in ("val_q2ar", "train_loss", "best_val_q2ar", "epoch")
    }
    assert points == dict.fromkeys(points, 8 * steps)  # every one of 8 x 40 reports arrived
