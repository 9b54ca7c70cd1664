"""A study whose driver is SIGKILLed mid-run, then resumed: the requested trials, one MLflow run
each, none left RUNNING. The driver runs as a real ``vcr-study launch`` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study import store
from study.tracking import trial_runs

pytestmark = pytest.mark.slow


def _command(synthetic_dir, cache, *args):
    return [
        sys.executable,
        "-m",
        "study.cli",
        "launch",
        "--name",
        "k1",
        "--space",
        "smoke",
        "--data",
        str(synthetic_dir),
        "--cache",
        str(cache),
        "--image-size",
        "256x128",
        "--trials",
        "4",
        "--epochs",
        "2",
        "--concurrent",
        "2",
        *args,
    ]


def test_a_killed_study_resumes_to_the_requested_trials(
    tmp_path, monkeypatch, synthetic_dir, synthetic_features
):
    home = tmp_path / "home"
    env = {**os.environ, "VCR_STUDY_HOME": str(home)}
    cache = synthetic_features.text.parent
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(
        _command(synthetic_dir, cache),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:  # kill it once a trial has finished and others run (the journal is then ahead of Tune)
        deadline = time.monotonic() + 300
        while "trials: 1 done" not in (tmp_path / "first.log").read_text():
            assert driver.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no trial result in 300 s"
            time.sleep(1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    monkeypatch.setenv("VCR_STUDY_HOME", str(home))
    options, parent = store.load("k1")
    client = MlflowClient(store.tracking_uri(options))
    before = trial_runs(client, parent)
    assert len(before) < 4 or "RUNNING" in set(before["status"])  # killed mid-study
    before_history = {r: client.get_metric_history(r, "val_q2ar") for r in before["run_id"]}

    resumed = subprocess.run(
        [sys.executable, "-m", "study.cli", "launch", "--name", "k1", "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert store.load("k1") == (options, parent)  # --resume rewrites no record
    after = trial_runs(client, parent)
    assert len(after) == 4 and after["trial_id"].is_unique
    assert set(after["status"]) == {"FINISHED"}
    assert set(before["run_id"]) <= set(after["run_id"])  # the old runs were reused
    for run_id in after["run_id"]:  # no epoch logged twice
        steps = [m.step for m in client.get_metric_history(run_id, "val_q2ar")]
        assert steps == sorted(set(steps)) and steps[-1] <= 2
    assert client.get_run(parent).info.status == "FINISHED"
    # no finished trial trained again: its epochs kept their first timestamps
    for run_id in before[before["status"] == "FINISHED"]["run_id"]:
        first = {m.step: m.timestamp for m in before_history[run_id]}
        again = {m.step: m.timestamp for m in client.get_metric_history(run_id, "val_q2ar")}
        assert again == first
    # Optuna's journal agrees with MLflow and Tune: 4 finished trials with the runs' params
    # (COMPLETE, or PRUNED where ASHA stopped one; the driver's orphan is FAIL)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(home / "studies" / "k1" / "optuna.journal"))
    )
    trials = optuna.load_study(study_name="k1", storage=storage).trials
    states = [t.state for t in trials]
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert sum(state in finished for state in states) == 4, states
    assert optuna.trial.TrialState.RUNNING not in states
    sampled = sorted(
        (t.params["method"], round(t.params["loss_ratio"], 6))
        for t in trials
        if t.state in finished
    )
    logged = sorted(
        (r["params.method"], round(float(r["params.loss_ratio"]), 6)) for _, r in after.iterrows()
    )
    assert sampled == logged
