"""End to end on a real local Ray (num_cpus=2), real Optuna and a real MLflow sqlite store."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
import torch
from mlflow.tracking import MlflowClient

from study import store
from study.tracking import trial_runs
from tests.helpers import free_port, wait_until_answers

pytestmark = pytest.mark.slow

GRID_WITH_NAN = """\
description: two sound trials and one whose loss turns NaN in its first epoch
fixed: {epochs: 2, batch_size: 8, preset: tiny, lr: 3.0e-3}
trials:
  - {method: softmax}
  - {method: teacher, correct_answer_rate: 1.0}
  - {method: gumbel, lr: 1.0e+30}
"""


@pytest.fixture
def study_home(tmp_path, monkeypatch, synthetic_features):
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _launch(cli, synthetic_dir, synthetic_features, *args):
    cache = synthetic_features.text.parent
    return cli(
        "launch",
        "--data",
        synthetic_dir,
        "--cache",
        cache,
        "--image-size",
        "256x128",
        "--concurrent",
        "2",
        *args,
    )


def test_a_study_runs_tracks_every_trial_and_survives_a_nan_trial(
    ray_local, study_home, cli, synthetic_dir, synthetic_features, tmp_path
):
    space = tmp_path / "nan.yaml"
    space.write_text(GRID_WITH_NAN)
    code, out, err = _launch(
        cli,
        synthetic_dir,
        synthetic_features,
        "--name",
        "g1",
        "--space",
        space,
        "--max-failures",
        "0",
        "--grace-period",  # both epochs of every sound trial run (ASHA may not stop one)
        "2",
    )
    assert code == 0, err
    assert "1 failed" in out
    # no checkpoint is left in Tune's storage: each approach's best trial's weights are in MLflow
    assert not list(store.experiment_dir("g1").rglob("checkpoint_*"))
    options, parent = store.load("g1")
    client = MlflowClient(store.tracking_uri(options))
    runs = trial_runs(client, parent)
    assert len(runs) == 3 and runs["trial_id"].is_unique
    assert set(runs["status"]) <= {"FINISHED", "FAILED"}
    failed = runs[runs["method"] == "gumbel"].iloc[0]
    assert failed["status"] == "FAILED" and failed["final_status"] == "FAILED"
    ok = runs[runs["method"] != "gumbel"]
    assert (ok["status"] == "FINISHED").all()
    for run_id in ok["run_id"]:  # every epoch once, in order
        steps = [m.step for m in client.get_metric_history(run_id, "val_q2ar")]
        assert steps == [1, 2]
    assert client.get_run(parent).info.status == "FINISHED"
    # the resolved config is an artifact, the params hold the method
    run = client.get_run(ok["run_id"].iloc[0])
    assert run.data.params["method"] in ("softmax", "teacher")
    local = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))
    assert json.loads(open(local).read())["preset"] == "tiny"
    # best per method answers from MLflow
    code, out, err = cli("best", "--name", "g1", "--json")
    assert code == 0, err
    every = json.loads(out)  # every row of the grid: the NaN one without a result
    best = [b for b in every if b["status"] != "no result"]
    assert [(b["method"], b["trials"]) for b in every if b not in best] == [("gumbel", 1)]
    assert {b["method"] for b in best} == {"softmax", "teacher"}
    assert all(0.0 <= b["dev_q2ar"] <= 1.0 for b in best)  # ranked on dev, the selection split
    assert all(b["metrics"]["dev_q2ar"] == b["dev_q2ar"] for b in best)  # at the best epoch
    assert all(0.0 <= b["metrics"]["val_q2ar"] <= 1.0 for b in best)  # reported beside it
    for b in best:  # its best epoch's weights, logged to its run when the study ended
        assert b["model"] == f"runs:/{b['run_id']}/model/best.pt"
        folder = tmp_path / b["method"]
        folder.mkdir()
        saved = torch.load(
            client.download_artifacts(b["run_id"], "model/best.pt", str(folder)), weights_only=True
        )
        assert saved["epoch"] == b["metrics"]["epoch"] and "optimizer" not in saved
    assert "best_model" not in client.get_run(failed["run_id"]).data.tags
    code, out, err = cli("best", "--name", "g1")
    assert code == 0, err
    assert "best weights (vcr-study predict --checkpoint <uri>; rerun --run <run id>):" in out
    softmax = next(b for b in best if b["method"] == "softmax")
    assert f"softmax  {softmax['model']}" in out
    # predict from the logged weights, named by their URI (the features: the run's own)
    code, out, err = cli(
        "predict", "--checkpoint", softmax["model"], "--split", "val", "--out", tmp_path / "v.csv"
    )
    assert code == 0, err
    assert len((tmp_path / "v.csv").read_text().splitlines()) == 1 + 9

    # the ablation tables and plots, written and logged to the parent run
    code, out, err = cli("ablations", "--name", "g1")
    assert code == 0, err
    reports = study_home / "reports" / "g1"
    for name in (
        "best_per_method.csv",
        "best_per_method.md",
        "learning_curves.png",
        "learning_curves.html",
        "baseline_rate.csv",
        "trials.csv",
    ):
        assert (reports / name).stat().st_size > 0, name
    table = (reports / "best_per_method.md").read_text()
    assert "| softmax |" in table and "| teacher |" in table
    assert "| gumbel |  | no result |" in table  # it ran, and failed: listed, not scored
    assert not (reports / "paper_table1.md").exists()  # not the paper's labelled rows
    logged = {a.path for a in client.list_artifacts(parent, "ablations")}
    assert "ablations/best_per_method.md" in logged

    # re-run one trial, named by its run id (as best prints it), with 2 seeds; write the test
    # submission
    code, out, err = cli(
        "rerun", "--name", "g1", "--run", softmax["run_id"], "--seeds", "2", "--epochs", "1"
    )
    assert code == 0, err
    assert f"re-running trial {softmax['trial_id']} (softmax)" in out
    assert "val_q2ar" in out and "+-" in out
    submission = reports / "submission-softmax.csv"
    lines = submission.read_text().splitlines()
    assert len(lines) == 1 + 9 and lines[0].startswith("annot_id,answer_0")
    reruns = client.search_runs([client.get_run(parent).info.experiment_id], "tags.rerun_of != ''")
    # seeds 1 and 2: never the trial's own seed 0 (its selected draw: the winner's curse)
    assert len(reruns) == 2 and {r.data.tags["seed"] for r in reruns} == {"1", "2"}
    assert len(trial_runs(client, parent)) == 3  # reruns are not trials

    # the MLflow UI of `vcr-study ui`, rendered by a real headless browser
    experiment_id = client.get_run(parent).info.experiment_id
    with _ui(study_home) as ui:
        port = ui.port
        # the link ui prints: the trials, ranked, with their method and validation metrics
        link = ui.links["g1"]
        assert link.endswith("workflowType=machine_learning&viewStateShareKey=vcr-study")
        page = _render(link)
        assert "shared view" in page  # the view the study saved, not MLflow's default columns
        for run in runs.itertuples():
            assert f"{run.method}-{run.trial_id}" in page
        for column in ("method", "final_status", "best_dev_q2ar"):
            assert column in page
        assert "gumbel" in page and "FAILED" in page  # a method and a status, as cells
        # the study's ablation tables and plots in its parent run's artifacts
        page = _render(
            f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{parent}"
            "/artifacts/ablations/best_per_method.md"
        )
        for name in ("best_per_method.md", "learning_curves.png", "trials.md"):
            assert name in page
        assert "no result" in page  # the table itself, shown: the NaN trial's row
        for run in runs.itertuples():
            page = _render(
                f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run.run_id}"
            )
            assert f"{run.method}-{run.trial_id}" in page  # the run's name
            assert "loss_ratio" in page and "correct_answer_rate" in page  # its params
            if run.status == "FINISHED":
                assert "val_q2ar" in page  # its metrics


class _ui:
    """``vcr-study ui`` in its own process group, stopped (by group id) on exit."""

    def __init__(self, home):
        self.env = {**os.environ, "VCR_STUDY_HOME": str(home)}

    def __enter__(self) -> _ui:
        self.port = free_port()
        self.output = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "study.cli", "ui", "--port", str(self.port)],
            env=self.env,
            stdout=self.output,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until_answers(
            f"http://127.0.0.1:{self.port}/health", self.process, "vcr-study ui", timeout=90
        )
        self.output.seek(0)  # "  study <name>: <link>" lines, printed before the server starts
        found = (re.match(r"\s+study (\S+): (\S+)$", line) for line in self.output)
        self.links = dict(m.groups() for m in found if m)
        return self

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self.output.close()


def _render(url: str) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (make test installs it when root)")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=20000",
            "--window-size=3840,1600",  # the table renders the columns in view only
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_an_optuna_study_on_the_smoke_space(
    ray_local, study_home, cli, synthetic_dir, synthetic_features
):
    code, out, err = _launch(
        cli,
        synthetic_dir,
        synthetic_features,
        "--name",
        "s1",
        "--space",
        "smoke",
        "--trials",
        "4",
        "--epochs",
        "2",
    )
    assert code == 0, err
    assert (study_home / "studies" / "s1" / "optuna.journal").is_file()
    options, parent = store.load("s1")
    client = MlflowClient(store.tracking_uri(options))
    runs = trial_runs(client, parent)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert "metrics.best_dev_q2ar" in runs
    code, out, err = cli("ablations", "--name", "s1")  # reads the Optuna journal too
    assert code == 0, err
    trials = (study_home / "reports" / "s1" / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 4
    assert "loss_ratio" in (study_home / "reports" / "s1" / "importances.csv").read_text()
    code, out, err = cli("launch", "--name", "s1")
    assert code == 2 and "a study of that name exists" in err


def test_the_paper_grid_on_chosen_features_then_rerun_without_extracting_again(
    ray_local, study_home, cli, synthetic_dir
):
    """A newcomer's path: extract with chosen options, then launch the paper's grid and rerun
    its winner with no feature options: the same features, never extracted again."""
    code, out, err = cli(
        "data", "features", synthetic_dir, "--image-size", "256x128", "--text-layer", "-1"
    )
    assert code == 0, err
    extracted = sorted(p.name for p in (study_home / "cache").iterdir())
    code, out, err = cli(
        "launch",
        "--data",
        synthetic_dir,
        "--name",
        "p1",
        "--space",
        "paper",
        "--set",
        "preset=tiny",
        "--set",
        "batch_size=8",
        "--set",
        "lr=3e-3",
        "--epochs",
        "1",
        "--concurrent",
        "2",
    )
    assert code == 0, err
    assert "using the features already extracted" in out and "layer -1" in out
    saved = json.loads((study_home / "studies" / "p1" / "study.json").read_text())
    assert saved["features"]["text_layer"] == -1 and saved["features"]["image_size"] == [256, 128]

    code, out, err = cli("best", "--name", "p1", "--json")
    assert code == 0, err
    best = json.loads(out)  # one row per paper approach, not per method
    assert {b["approach"] for b in best} == {
        "R2C",
        "new baseline",
        "direct cross entropy",
        "RL sampling",
        "softmax",
        "softmax 1:4",
        "Gumbel softmax",
        "Gumbel softmax 1:4",
    }
    assert {b["method"] for b in best if b["approach"] in ("R2C", "new baseline")} == {"teacher"}

    code, out, err = cli("ablations", "--name", "p1")
    assert code == 0, err
    reports = study_home / "reports" / "p1"
    table1 = (reports / "paper_table1.md").read_text()
    assert "NOT COMPARABLE" in table1  # the synthetic data is not VCR 1.0 val
    assert "| new baseline | 63.8 |" in table1 and "| Gumbel softmax | 64.54 |" in table1
    assert "| R2C | 63.8 |" in (reports / "paper_table2.md").read_text()
    assert "| softmax 1:4 | 58.1 |" in (reports / "paper_table4.md").read_text()

    code, out, err = cli(
        "rerun", "--name", "p1", "--method", "new baseline", "--seeds", "2", "--epochs", "1"
    )
    assert code == 0, err
    test_line = next(line for line in out.splitlines() if line.split()[:2] == ["test", "test_q2ar"])
    assert re.search(r"\[-?\d\.\d{4}, -?\d\.\d{4}\]$", test_line)  # held-out test, 95% interval
    assert sorted(p.name for p in (study_home / "cache").iterdir()) == extracted
    code, out, err = cli("rerun", "--name", "p1", "--seeds", "1", "--image-size", "384x192")
    assert code == 2 and "--image-size 384x192: study p1 was trained on 256x128" in err
    code, out, err = cli("rerun", "--name", "p1", "--method", "teacher")
    assert code == 2 and "2 rows of the study use it (" in err and "name one" in err
    assert (study_home / "reports" / "p1" / "submission-new-baseline.csv").is_file()
