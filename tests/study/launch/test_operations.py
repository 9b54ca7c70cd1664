"""Operating studies for weeks: records that never mix, a disk that never fills, output a person
can read (issue 15). On a real local Ray, real Optuna and a real MLflow sqlite store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from study import store
from study.launch.retention import CheckpointPruner
from study.tracking import trial_runs

pytestmark = pytest.mark.slow

ONE_TRIAL = """\
description: one short trial
fixed: {epochs: 2, batch_size: 8, preset: tiny, lr: 3.0e-3}
trials:
  - {method: softmax}
"""


@pytest.fixture
def study_home(tmp_path, monkeypatch, synthetic_features):
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _launch(cli, synthetic_dir, synthetic_features, tmp_path, *args):
    space = tmp_path / "one.yaml"
    space.write_text(ONE_TRIAL)
    return cli(
        "launch",
        "--data",
        synthetic_dir,
        "--cache",
        synthetic_features.text.parent,
        "--image-size",
        "256x128",
        "--space",
        space,
        *args,
    )


def test_a_name_used_before_is_refused_until_deleted_and_checkpoints_are_not_kept(
    ray_local, study_home, cli, synthetic_dir, synthetic_features, tmp_path
):
    code, out, err = _launch(cli, synthetic_dir, synthetic_features, tmp_path, "--name", "o1")
    assert code == 0, err
    first = store.load("o1").parent_run_id
    # nothing of a finished trial's checkpoints is left: not in Tune's storage, not in its folder
    assert not list((study_home / "ray_results").rglob("checkpoint_*"))
    # but for the best trial's weights, logged to its MLflow run (the study's one approach)
    weights = list(study_home.rglob("*.pt"))
    assert [p.relative_to(p.parents[2]).as_posix() for p in weights] == ["artifacts/model/best.pt"]
    assert (study_home / "studies" / "o1" / "launch.log").stat().st_size > 0

    code, out, err = cli("studies")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("o1 "))
    assert "finished" in row and "softmax" in row

    # --resume takes the resources a trial asks for, and says which other options it ignores
    code, out, err = _launch(
        cli, synthetic_dir, synthetic_features, tmp_path,
        "--name", "o1", "--resume", "--cpus-per-trial", "0.5", "--trials", "9", "--seed", "3",
    )  # fmt: skip
    assert code == 0, err
    assert "vcr-study: warning: --resume: --trials, --seed ignored" in err, err
    assert store.load("o1").options.cpus_per_trial == 0.5
    assert store.load("o1").options.trials == 8 and store.load("o1").options.seed == 0

    # Tune's experiment left behind: Ray would overwrite its tuner.pkl
    shutil.rmtree(study_home / "studies" / "o1")
    code, out, err = _launch(cli, synthetic_dir, synthetic_features, tmp_path, "--name", "o1")
    assert code == 2 and "is left from an earlier study of that name" in err, err
    # only the tracking store has it now: refused before any feature or trial
    shutil.rmtree(study_home / "ray_results" / "o1")
    code, out, err = _launch(cli, synthetic_dir, synthetic_features, tmp_path, "--name", "o1")
    assert code == 2 and "already has a study of that name" in err, err
    assert "vcr-study delete --name o1" in err and len(err.strip().splitlines()) == 1

    code, out, err = cli("delete", "--name", "o1", "--yes")
    assert code == 0, err
    code, out, err = _launch(cli, synthetic_dir, synthetic_features, tmp_path, "--name", "o1")
    assert code == 0, err
    options, second = store.load("o1")
    assert second != first
    client = MlflowClient(store.tracking_uri(options))
    assert len(trial_runs(client, second)) == 1  # the new study's trial only


def test_launch_shows_its_own_lines_and_logs_the_libraries(
    tmp_path, synthetic_dir, synthetic_features
):
    """In a subprocess, as a person runs it: no Ray notices, MLflow migrations, Optuna's
    "A new study created" or Tune's boxed summary on the terminal; all of them in launch.log."""
    home = tmp_path / "home"
    env = {**os.environ, "VCR_STUDY_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "study.cli",
            "launch",
            "--name",
            "q1",
            "--space",
            "smoke",
            "--trials",
            "1",
            "--epochs",
            "1",
            "--concurrent",
            "1",
            "--data",
            str(synthetic_dir),
            "--cache",
            str(synthetic_features.text.parent),
            "--image-size",
            "256x128",
            "--ray-temp-dir",
            "/tmp/ray",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    log = (home / "studies" / "q1" / "launch.log").read_text()
    assert "A new study created" in log  # Optuna's
    shown = ran.stdout + ran.stderr
    for noise in ("A new study created", "INFO", "TensorBoard", "╭", "Trial status"):
        assert noise not in shown, noise
    assert "study q1 done" in ran.stdout and "trials: 1 done" in ran.stdout


def test_a_dry_run_prints_the_plan_and_writes_nothing(
    study_home, cli, synthetic_dir, synthetic_features, tmp_path
):
    code, out, err = _launch(
        cli, synthetic_dir, synthetic_features, tmp_path, "--name", "p1", "--dry-run"
    )
    assert code == 0, err
    assert "features (" in out and "cached" in out
    assert "plan: 1 trial of up to 2 epochs" in out
    assert "trial-epochs: 2 at most" in out and "wall time: ~" in out
    assert "disk: ~" in out and ": OK" in out
    assert not study_home.exists()  # no study, no store, no Ray


@pytest.mark.parametrize("space", ["default", "paper"])
def test_real_data_without_a_preset_trains_r2cs_model_and_says_so(
    study_home, cli, synthetic_dir, synthetic_features, space
):
    """On data other than the built-in set (here the tests' copy, given by --data) a study whose
    space and --set name no preset is planned with R2C's model, in one warning line; the paper
    space names its own (r2c), a --set names another: no line."""
    args = ["launch", "--data", synthetic_dir, "--cache", synthetic_features.text.parent]
    args += ["--image-size", "256x128", "--space", space, "--dry-run", "--name", "m1"]
    code, out, err = cli(*args)
    assert code == 0, err
    warned = [line for line in out.splitlines() if "no preset given" in line]
    if space == "paper":
        assert warned == []
    else:
        assert warned == [
            "warning: no preset given for data other than the built-in set: training R2C's "
            "model (preset r2c); pass --set preset=small for the small one"
        ]
    code, out, err = cli(*args, "--set", "preset=small")
    assert code == 0 and "no preset given" not in out + err, err
    assert not study_home.exists()


def test_train_on_real_data_without_a_preset_trains_r2c(
    cli, synthetic_dir, synthetic_features, tmp_path
):
    from vcrnet.train import load_checkpoint

    code, out, err = cli(
        "train", "--data", synthetic_dir, "--cache", synthetic_features.text.parent,
        "--image-size", "256x128", "--epochs", "1", "--set", "batch_size=8",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    assert "no preset given for data other than the built-in set" in err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["preset"] == "r2c"


def test_a_study_the_disk_cannot_hold_is_refused_before_it_starts(
    study_home, cli, synthetic_dir, synthetic_features, tmp_path, monkeypatch
):
    monkeypatch.setattr("study.launch.cost.free_bytes", lambda home: 1_000_000)  # 1 MB free
    code, out, err = _launch(cli, synthetic_dir, synthetic_features, tmp_path, "--name", "f1")
    assert code == 2, err
    # one error line (a warning may come before it: features not yet extracted for this data)
    errors = [line for line in err.splitlines() if line.startswith("vcr-study: error:")]
    assert len(errors) == 1 and errors == err.strip().splitlines()[-1:], err
    line = errors[0]
    assert "1.0 MB free, the study needs about" in line
    assert "--ignore-free-space" in line
    assert not (study_home / "studies" / "f1").exists()  # no record, no folder left
    code, out, err = _launch(
        cli, synthetic_dir, synthetic_features, tmp_path, "--name", "f1", "--dry-run"
    )
    assert code == 0 and "NOT ENOUGH" in out, err


@pytest.mark.parametrize(
    "damage, message",
    [("repeat", "repeats line 2"), ("drop", "items missing"), ("extra", "is not in the split")],
)
def test_evaluate_refuses_a_csv_with_a_repeated_missing_or_extra_id(
    cli, synthetic_dir, tmp_path, damage, message
):
    import torch

    from vcrnet.data import read_split
    from vcrnet.leaderboard import write_csv

    ids = [item.annot_id for item in read_split(synthetic_dir, "val")]
    ids = {"repeat": ids + ids[:1], "drop": ids[1:], "extra": ids + ["not-an-id"]}[damage]
    path = write_csv(
        tmp_path / "p.csv", ids, torch.full((len(ids), 4), 0.25), torch.full((len(ids), 4, 4), 0.25)
    )
    code, out, err = cli("evaluate", "--predictions", path, "--data", synthetic_dir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_the_pruner_holds_each_approachs_best_ended_trial_until_the_study_ends(tmp_path):
    """Tune's hooks called as Tune calls them, on stand-in trials with real folders: an ended
    trial's checkpoints go once two snapshots recorded it ended, but for the best of its approach
    (ties kept), which goes when a better one ends or the study does."""

    def trial(trial_id, method):
        folder = tmp_path / trial_id
        (folder / "checkpoint_000001").mkdir(parents=True)
        working = SimpleNamespace(trial_working_directory=str(tmp_path / f"work-{trial_id}"))
        return SimpleNamespace(
            trial_id=trial_id,
            config={"method": method},
            path=str(folder),
            storage=working,
            status="TERMINATED",
            metric_analysis={},
        )

    def kept(*trials):
        return {t.trial_id for t in trials if (Path(t.path) / "checkpoint_000001").is_dir()}

    pruner = CheckpointPruner("dev_q2ar", lambda config: config["method"])
    a, b, c, d, e = (trial(i, m) for i, m in zip("abcde", ["s", "s", "g", "s", "g"]))
    every = [a, b, c, d, e]

    def end(t, *values):
        for value in values:
            pruner.on_trial_result(0, [], t, {"dev_q2ar": value})
        pruner.on_trial_complete(0, [], t)
        pruner.get_state()  # the snapshot that records it ended
        pruner.get_state()  # the next one: it is removed or held

    end(a, 0.3, 0.5)
    assert kept(*every) == set("abcde")
    end(b, 0.6, float("nan"))  # beats a: a goes
    assert kept(*every) == set("bcde")
    end(c, 0.2)
    end(d, 0.4, 0.6)  # ties b: both held
    assert kept(*every) == set("bcde")
    e.status = "ERROR"
    pruner.on_trial_result(0, [], e, {"dev_q2ar": float("nan")})
    pruner.on_trial_error(0, [], e)
    pruner.get_state()
    pruner.get_state()  # failed without a finite value: never held
    assert kept(*every) == set("bcd")
    pruner.on_experiment_end(every)  # after the tracker logged what they keep
    assert kept(*every) == set()

    keeping = CheckpointPruner("dev_q2ar", lambda config: config["method"], prune=False)
    f = trial("f", "s")
    keeping.on_trial_complete(0, [], f)
    keeping.get_state()
    keeping.get_state()
    keeping.on_experiment_end([f])
    assert kept(f) == {"f"}  # --keep-checkpoints


def test_a_study_whose_every_trial_failed_exits_1_with_the_error_and_where_it_is(
    ray_local, study_home, cli, synthetic_dir, synthetic_features, tmp_path
):
    """Every trial fails at run time (its node-local cache folder is a file): launch exits 1
    with the trial's own error line and the file with the whole error, not "study done"; the
    study is finished in MLflow; ablations say in one line that there is nothing to report."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    code, out, err = _launch(
        cli, synthetic_dir, synthetic_features, tmp_path,
        "--name", "f1", "--local-cache", blocker, "--max-failures", "0",
    )  # fmt: skip
    assert code == 1, (out, err)
    # (in this process the libraries' log lines reach stderr too; a terminal's go to launch.log)
    lines = [line for line in err.splitlines() if line.startswith("vcr-study: error")]
    assert len(lines) == 1 and lines[0].startswith("vcr-study: error: study f1: its trial failed:")
    assert "Error" in lines[0] and "(the whole error: " in lines[0] and "error.txt)" in lines[0]
    assert Path(lines[0].rsplit("(the whole error: ", 1)[1].rstrip(")")).is_file()
    assert "study f1 done" not in out
    code, out, err = cli("studies")
    assert code == 0 and "finished" in next(ln for ln in out.splitlines() if ln.startswith("f1 "))
    code, out, err = cli("ablations", "--name", "f1")
    assert code == 2 and err.count("\n") == 1, err
    assert "f1: none of its trials reported a result (1 FAILED)" in err
