"""The finals: each approach's best configuration re-trained with new seeds as Ray Tune trials of
the study (real Ray, real MLflow, real training at tiny size), then the verdict and the
submission; and the finals' bad inputs."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from study import store
from study.tracking import finals_runs, trial_runs

pytestmark = pytest.mark.slow

GRID = """\
description: two approaches, tiny
fixed: {epochs: 2, batch_size: 8, preset: tiny, lr: 3.0e-3}
trials:
  - {label: R2C, method: teacher, correct_answer_rate: 1.0}
  - {method: softmax}
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory, synthetic_dir, synthetic_features, ray_local):
    """A finished two-approach study (grid, one trial each) in its own home."""
    import os

    from study.cli import main  # noqa: F401 (the CLI's imports, once)

    home = tmp_path_factory.mktemp("finals") / "home"
    space = home.parent / "two.yaml"
    space.write_text(GRID)
    os.environ["VCR_STUDY_HOME"] = str(home)
    try:
        code = _main(
            "launch", "--name", "f1", "--space", space, "--data", synthetic_dir, "--cache",
            synthetic_features.text.parent, "--image-size", "256x128", "--concurrent", "2",
        )  # fmt: skip
        assert code == 0
        yield home
    finally:
        os.environ.pop("VCR_STUDY_HOME", None)


def _main(*args) -> int:
    import sys

    from study.cli import main

    old = sys.argv
    sys.argv = ["vcr-study", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.argv = old


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seeds", "0"), "--seeds 0: must be at least 1"),
        (("--top", "0"), "--top 0: must be at least 1"),
        (("--epochs", "0"), "--epochs 0: must be at least 1"),
        (("--concurrent", "0"), "--concurrent"),
        (("--cpus-per-trial", "64"), "--cpus-per-trial 64: this machine has"),
        (("--resume",), "it has no finals to resume"),
        (("--method", "gumbel"), "--method gumbel: no trial of that method or row"),
        (("--method", "softmax", "--run", "x"), "--method and --run: give one"),
        (("--run", "0" * 32), f"--run {'0' * 32}: not a trial run of this study"),
    ],
)
def test_finals_refuse_bad_options_before_anything_is_written(
    searched, cli, monkeypatch, args, message
):
    monkeypatch.setenv("VCR_STUDY_HOME", str(searched))
    before = sorted(p.relative_to(searched) for p in searched.rglob("*") if "finals" in p.name)
    code, out, err = cli("finals", "--name", "f1", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    after = sorted(p.relative_to(searched) for p in searched.rglob("*") if "finals" in p.name)
    assert after == before


def test_finals_of_a_running_study_are_refused(searched, cli, monkeypatch):
    monkeypatch.setenv("VCR_STUDY_HOME", str(searched))
    with store.running("f1"):
        code, out, err = cli("finals", "--name", "f1", "--seeds", "1")
    assert code == 2 and "the study is running" in err


def test_finals_run_as_concurrent_trials_and_give_a_verdict(searched, cli, monkeypatch):
    monkeypatch.setenv("VCR_STUDY_HOME", str(searched))
    code, out, err = cli("finals", "--name", "f1", "--seeds", "2", "--concurrent", "2")
    assert code == 0, err
    options, parent = store.load("f1")
    client = MlflowClient(store.tracking_uri(options))
    search = trial_runs(client, parent)
    assert len(search) == 2  # the finals are not search trials
    runs = finals_runs(client, parent)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert sorted(zip(runs["label"], runs["seed"])) == [
        ("R2C", 1),
        ("R2C", 2),
        ("softmax", 1),
        ("softmax", 2),
    ]  # fmt: skip: seeds the search (seed 0) never used
    by_label = dict(zip(search["label"], search["trial_id"]))
    assert all(by_label[r["label"]] == r["finals_of"] for _, r in runs.iterrows())
    for _, run in runs.iterrows():  # every epoch once, predictions and weights logged
        steps = [m.step for m in client.get_metric_history(run["run_id"], "val_q2ar")]
        assert steps == [1, 2]
        logged = {a.path for a in client.list_artifacts(run["run_id"], "predictions")}
        assert logged == {"predictions/val.csv", "predictions/test.csv"}
        # test scored with every decoding, as val: the built-in data keeps its test labels
        assert 0 <= run["metrics.test_q2ar"] <= 1 and 0 <= run["metrics.test_q2ar_mixture"] <= 1
    # two at a time: some pair of runs overlapped in time
    spans = [
        (client.get_run(r).info.start_time, client.get_run(r).info.end_time) for r in runs["run_id"]
    ]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :])

    reports = searched / "reports" / "f1"
    verdict = (reports / "verdict.csv").read_text().splitlines()
    assert len(verdict) == 2 and ("R2C" in verdict[1] and "softmax" in verdict[1])
    assert (reports / "verdict_forest.png").is_file() and (
        reports / "verdict_forest.html"
    ).is_file()
    submission = next(reports.glob("submission-*.csv"))
    assert len(submission.read_text().splitlines()) == 1 + 9  # the test split's 9 questions
    logged = {a.path for a in client.list_artifacts(parent, "verdict")}
    assert {"verdict/verdict.csv", "verdict/verdict.md", "verdict/finals.csv"} <= logged
    table2 = (reports / "finals_paper_table2.md").read_text()  # the paper's, from the finals
    assert "| R2C | 63.8 |" in table2 and "Q->AR +-95%" in table2 and "NOT COMPARABLE" in table2
    assert "validation val_q2ar" in out and "test       test_q2ar" in out
    assert "test submission:" in out

    code, out, err = cli("best", "--name", "f1")
    assert code == 0, err
    assert "finals (each approach's finalist over its seeds" in out
    code, out, err = cli("best", "--name", "f1", "--json")
    assert code == 0 and {r["approach"] for r in json.loads(out)["finals"]} == {"R2C", "softmax"}
    code, out, err = cli("verdict", "--name", "f1")
    assert code == 0 and "R2C" in out
    code, out, err = cli("finals", "--name", "f1")
    assert code == 2 and "its finals exist" in err and len(err.strip().splitlines()) == 1

    # an approach whose every finals run failed has no finalist; the rest are still reported
    for run_id in runs[runs["label"] == "softmax"]["run_id"]:
        client.set_tag(run_id, "final_status", "FAILED")
    code, out, err = cli("verdict", "--name", "f1")
    assert code == 0, err
    assert "softmax: no finalist (all 2 finals runs failed)" in out
    assert "no pair to judge" in (reports / "verdict.md").read_text()
    assert "submission-R2C.csv" in out


def test_finals_killed_with_their_driver_resume_with_every_seed_once(
    tmp_path, monkeypatch, synthetic_dir, synthetic_features
):
    """``launch --finals 2`` (a real driver process) SIGKILLed once a finals trial has ended,
    then ``finals --resume``: every approach's two seeds exactly once, every epoch logged once,
    the finished ones not trained again, the verdict written."""
    import os
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    space = tmp_path / "two.yaml"
    space.write_text(GRID)
    env = {**os.environ, "VCR_STUDY_HOME": str(home)}
    log_path = tmp_path / "first.log"
    command = [
        sys.executable, "-m", "study.cli", "launch", "--name", "k2", "--space", space,
        "--data", synthetic_dir, "--cache", synthetic_features.text.parent,
        "--image-size", "256x128", "--concurrent", "2", "--finals", "2",
    ]  # fmt: skip
    with log_path.open("w") as log:
        driver = subprocess.Popen(
            list(map(str, command)), env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "trials: 1 done" not in log_path.read_text().partition("starting finals")[2]:
            assert driver.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "no finals trial ended in 300 s"
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    monkeypatch.setenv("VCR_STUDY_HOME", str(home))
    options, parent = store.load("k2")
    client = MlflowClient(store.tracking_uri(options))
    before = finals_runs(client, parent)
    done = before[before["status"] == "FINISHED"]
    assert 1 <= len(done) < 4
    first = {r: client.get_metric_history(r, "val_q2ar") for r in done["run_id"]}

    resumed = subprocess.run(
        [sys.executable, "-m", "study.cli", "finals", "--name", "k2", "--resume"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = finals_runs(client, parent)
    assert sorted(zip(after["label"], after["seed"])) == [
        ("R2C", 1), ("R2C", 2), ("softmax", 1), ("softmax", 2),
    ]  # fmt: skip
    assert set(after["status"]) == {"FINISHED"} and set(before["run_id"]) <= set(after["run_id"])
    for run_id in after["run_id"]:
        steps = [m.step for m in client.get_metric_history(run_id, "val_q2ar")]
        assert steps == [1, 2]
    for run_id, history in first.items():  # not trained again: the same epochs, same times
        again = client.get_metric_history(run_id, "val_q2ar")
        assert [(m.step, m.timestamp) for m in again] == [(m.step, m.timestamp) for m in history]
    assert len(trial_runs(client, parent)) == 2
    assert (home / "reports" / "k2" / "verdict.csv").is_file()
    assert "R2C" in resumed.stdout and "test submission:" in resumed.stdout


def test_finals_of_a_study_without_a_dev_result_are_refused(
    tmp_path, cli, monkeypatch, synthetic_dir, synthetic_features, ray_local
):
    home = tmp_path / "home"
    monkeypatch.setenv("VCR_STUDY_HOME", str(home))
    space = tmp_path / "nan.yaml"
    space.write_text(
        "description: one trial whose loss turns NaN (it fails)\n"
        "fixed: {epochs: 1, batch_size: 8, preset: tiny, lr: 1.0e+30}\n"
        "trials:\n  - {method: gumbel}\n"
    )
    code, out, err = cli(
        "launch", "--name", "n1", "--space", space, "--data", synthetic_dir, "--cache",
        synthetic_features.text.parent, "--image-size", "256x128",
    )  # fmt: skip
    assert code == 1 and "its trial failed" in err  # the study exists, without a result
    code, out, err = cli("finals", "--name", "n1", "--seeds", "1")
    assert code == 2 and "no trial with a dev result to re-train" in err
    assert not store.finals_path("n1").exists()
