"""The notebook API (``study.api``) on a real MLflow sqlite store, without Ray.

The study is made as ``launch`` leaves it: the experiment and parent run by
``tracking.create_study``, the record by ``store.save``, and each trial logged by the real
``tracking.MLflowTracker``, its Tune hooks called with stand-in trials as Tune calls them.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study import api, store, tracking
from vcrnet.errors import InputError

FEATURES = {"text_encoder": "minilm", "text_layer": -1, "image_size": [256, 128]}
NAME = "nb1"
# trial: method, label, epochs asked, per epoch (dev_q2ar, val_q2ar, train_loss), how it ended
TRIALS = {
    "nb1_00000": (
        "softmax",
        None,
        3,
        [(0.30, 0.28, 2.0), (0.50, 0.47, 1.5), (0.45, 0.46, 1.2)],
        "complete",
    ),
    "nb1_00001": ("softmax", None, 3, [(0.40, 0.41, 2.1), (0.42, 0.40, 1.9)], "complete"),
    "nb1_00002": (
        "teacher",
        "r2c",
        3,
        [(0.20, 0.22, 2.2), (0.60, 0.58, 1.4), (0.60, 0.59, 1.1)],
        "complete",
    ),  # a tie: the first epoch at the best counts
    "nb1_00003": ("teacher", "new baseline", 2, [(0.55, 0.52, 1.6), (0.35, 0.36, 1.7)], "error"),
    "nb1_00004": ("gumbel", None, 3, [], None),  # started, has reported nothing
}
LR = 0.001


def flat_params(config: dict) -> dict:
    """As launch's: the resolved TrainConfig (a None among them, as ``hidden`` often is)."""
    return {
        "method": config["method"],
        "epochs": config["epochs"],
        "lr": LR,
        "hidden": None,
        "preset": "small",
    }


def log_trial(tracker: tracking.MLflowTracker, trial_id: str) -> None:
    method, label, epochs, points, end = TRIALS[trial_id]
    config = {"method": method, "epochs": epochs, **({"grid": {"label": label}} if label else {})}
    trial = SimpleNamespace(trial_id=trial_id, config=config, error_file=None)
    tracker.on_trial_start(0, [], trial)
    for epoch, (dev, val, loss) in enumerate(points, 1):
        result = {
            "epoch": epoch,
            "dev_q2ar": dev,
            "val_q2ar": val,
            "val_q2a": val + 0.1,
            "train_loss": loss,
            "lr": LR,
            "training_iteration": epoch,
        }
        tracker.on_trial_result(0, [], trial, result)
    if end == "complete":
        tracker.on_trial_complete(0, [], trial)
    elif end == "error":
        tracker.on_trial_error(0, [], trial)


def make_study(client: MlflowClient, name: str, trial_ids=()) -> str:
    parent = tracking.create_study(client, name, store.home(), store.artifacts_dir(name))
    store.save(store.StudyRecord(store.LaunchOptions(name=name, features=FEATURES), parent))
    tracker = tracking.MLflowTracker(
        client.tracking_uri, parent, SimpleNamespace(params=flat_params), "dev_q2ar"
    )
    for trial_id in trial_ids:
        log_trial(tracker, trial_id)
    experiment_id = client.get_run(parent).info.experiment_id
    rerun = client.create_run(experiment_id, tags={tracking.PARENT_TAG: parent})  # not a trial
    client.set_terminated(rerun.info.run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One home and study for the module (its sqlite store is made once: ~5 s)."""
    path = tmp_path_factory.mktemp("api") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VCR_STUDY_HOME", str(path))
        client = MlflowClient(store.tracking_uri(store.LaunchOptions()))
        make_study(client, NAME, TRIALS)
        make_study(client, "nb-empty")
        yield path


def best_epoch(trial_id: str) -> int | None:
    """The first epoch at the highest dev_q2ar."""
    devs = [dev for dev, _, _ in TRIALS[trial_id][3]]
    return devs.index(max(devs)) + 1 if devs else None


def test_trials_is_a_row_per_trial_with_its_best_epoch_and_params(home):
    runs = api.trials(NAME)
    assert list(runs["trial_id"]) == sorted(TRIALS)  # the rerun's run is no trial
    assert list(runs.columns[: len(api.TRIAL_COLUMNS)]) == api.TRIAL_COLUMNS
    assert list(runs.columns).count("method") == 1  # the method param is the method column
    for row in runs.to_dict("records"):
        method, label, epochs, points, _ = TRIALS[row["trial_id"]]
        assert (row["method"], row["approach"], row["epochs"]) == (method, label or method, epochs)
        assert row["lr"] == LR and math.isnan(row["hidden"]) and row["preset"] == "small"
        if not points:
            assert pd.isna(row["best_epoch"]) and pd.isna(row["epochs_run"])
            assert math.isnan(row["best_dev_q2ar"]) and math.isnan(row["val_q2ar"])
            continue
        dev, val, _ = points[best_epoch(row["trial_id"]) - 1]
        assert (row["best_epoch"], row["epochs_run"]) == (best_epoch(row["trial_id"]), len(points))
        assert (row["best_dev_q2ar"], row["dev_q2ar"]) == (dev, dev)
        assert (row["val_q2ar"], row["val_q2a"]) == pytest.approx((val, val + 0.1))
    statuses = runs.set_index("trial_id")[["status", "final_status"]].apply(tuple, axis=1)
    assert list(statuses) == [
        ("FINISHED", "COMPLETED"),
        ("FINISHED", "STOPPED_EARLY"),
        ("FINISHED", "COMPLETED"),
        ("FAILED", "FAILED"),
        ("RUNNING", "RUNNING"),
    ]
    assert runs["epochs"].dtype.kind == "i" and runs["best_epoch"].dtype == "Int64"


def test_best_is_the_best_trial_per_approach_ranked_on_dev(home):
    every = api.best(NAME)
    assert list(every.columns[: len(api.BEST_COLUMNS)]) == api.BEST_COLUMNS
    # then a row for each method of the study's space (default) that has no result
    missing = every[every["trials"].eq(0) | every["dev_q2ar"].isna()]
    assert set(missing["approach"]) == {"gumbel", "reinforce", "direct16", "teacher"}
    assert set(missing["final_status"]) == {"no trial", "no result"}  # gumbel ran, no result
    best = every.drop(missing.index)
    assert list(best["approach"]) == ["r2c", "new baseline", "softmax"]
    expect = {
        "r2c": ("nb1_00002", 1),
        "new baseline": ("nb1_00003", 1),
        "softmax": ("nb1_00000", 2),
    }
    for row in best.to_dict("records"):
        trial_id, count = expect[row["approach"]]
        dev, val, _ = TRIALS[trial_id][3][best_epoch(trial_id) - 1]
        assert (row["trial_id"], row["trials"], row["best_epoch"]) == (
            trial_id,
            count,
            best_epoch(trial_id),
        )
        assert (row["dev_q2ar"], row["val_q2ar"]) == pytest.approx((dev, val))
        assert row["config"]["lr"] == str(LR)  # as logged
    assert list(best["final_status"]) == ["COMPLETED", "FAILED", "COMPLETED"]


def test_curves_are_every_logged_point_in_long_format(home):
    curves = api.curves(NAME)
    assert list(curves.columns) == api.CURVE_COLUMNS
    logged = [
        (trial_id, label or method, method, epoch, metric, value)
        for trial_id, (method, label, _, points, _) in TRIALS.items()
        for epoch, values in enumerate(points, 1)
        for metric, value in zip(("dev_q2ar", "val_q2ar", "train_loss"), values)
    ]
    expected = sorted(logged, key=lambda row: (row[0], row[4], row[3]))  # trial, metric, epoch
    assert list(curves.itertuples(index=False, name=None)) == expected
    one = api.curves(NAME, "val_q2ar")
    assert set(one["metric"]) == {"val_q2ar"} and len(one) == len(curves) / 3
    assert api.curves(NAME, ["no_such_metric"]).empty


def test_an_empty_study_gives_empty_tables_with_their_columns(home):
    assert list(api.trials("nb-empty").columns) == api.TRIAL_COLUMNS
    assert list(api.best("nb-empty").columns) == [*api.BEST_COLUMNS, "config"]
    assert list(api.curves("nb-empty").columns) == api.CURVE_COLUMNS
    assert api.trials("nb-empty").empty
    assert set(api.best("nb-empty")["final_status"]) == {"no trial"}  # the space's methods


def test_studies_lists_each_study_with_its_best(home):
    studies = api.studies().set_index("name")
    assert list(studies.index) == ["nb-empty", NAME]
    row = studies.loc[NAME]
    assert (row["state"], row["trials"], row["best_dev_q2ar"]) == ("finished", 5, 0.60)
    assert (row["best_approach"], row["best_method"]) == ("r2c", "teacher")
    assert row["disk_bytes"] > 0
    assert studies.loc["nb-empty", "trials"] == 0
    assert math.isnan(studies.loc["nb-empty", "best_dev_q2ar"])


@pytest.mark.parametrize("function", [api.trials, api.best, api.curves])
def test_an_unknown_study_or_a_missing_store_is_one_line(home, function):
    with pytest.raises(InputError, match=f"^--name nope: no such study under {home}") as error:
        function("nope")
    assert "\n" not in str(error.value)
    gone = home / "gone.db"
    store.save(
        store.StudyRecord(
            store.LaunchOptions(
                name="nb-gone", features=FEATURES, tracking_uri=f"sqlite:///{gone}"
            ),
            "0123",
        )
    )
    with pytest.raises(InputError, match="^--name nb-gone: its tracking store .* is not there"):
        function("nb-gone")
    assert not gone.exists()  # reading never creates a store


def test_each_approachs_best_weights_are_logged_when_the_study_ends(home, tmp_path):
    client = MlflowClient(store.tracking_uri(store.LaunchOptions()))
    ids = ["nb1_00000", "nb1_00001", "nb1_00002", "nb1_00004"]
    parent = make_study(client, "nb-model", ids)
    trials = []
    for trial_id in ids:  # Tune's trial folders: an older checkpoint, and the latest
        folder = tmp_path / trial_id
        for n in (1, 2):
            (folder / f"checkpoint_00000{n}").mkdir(parents=True)
            (folder / f"checkpoint_00000{n}" / "best.pt").write_text(f"{trial_id} {n}")
        ended = trial_id != "nb1_00004"  # still running: an interrupted study's
        trials.append(
            SimpleNamespace(
                trial_id=trial_id, status="TERMINATED" if ended else "RUNNING", path=str(folder)
            )
        )
    tracker = tracking.MLflowTracker(
        client.tracking_uri, parent, SimpleNamespace(params=flat_params), "dev_q2ar"
    )
    tracker.on_experiment_end(trials)

    best = api.best("nb-model").set_index("approach")
    models = best["model"][best["model"].astype(bool)]
    assert sorted(models.index) == ["r2c", "softmax"]  # each approach's best trial, no other
    for approach, uri in models.items():
        run_id = best.loc[approach, "run_id"]
        assert uri == f"runs:/{run_id}/model/best.pt"
        trial_id = best.loc[approach, "trial_id"]
        assert api.model_file(uri).read_text() == f"{trial_id} 2"  # its latest checkpoint's
        assert api.model_file(run_id) == api.model_file(uri, "nb-model")
        assert home in api.model_file(run_id).parents  # a local store's file, where it lies
    trials_table = api.trials("nb-model").set_index("trial_id")
    assert trials_table.loc["nb1_00001", "model"] == ""  # softmax's second best: not logged
    other = trials_table.loc["nb1_00001", "run_id"]
    with pytest.raises(InputError, match=f"^{other}: run {other} has no logged weights"):
        api.model_file(other)
    with pytest.raises(InputError, match="no such run in"):
        api.model_file("0" * 32)
    with pytest.raises(InputError, match="^runs:/x: not a run id or a runs:/"):
        api.model_file("runs:/x")

    # rerun --run: a trial run of the study, as best gives its row
    row = tracking.trial_of_run(client, parent, other, "dev_q2ar")
    assert (row["trial_id"], row["approach"], row["trials"]) == ("nb1_00001", "softmax", 1)
    assert row["config"]["lr"] == str(LR) and row["dev_q2ar"] == 0.42
    first = store.load(NAME).parent_run_id  # a run of another study is refused
    with pytest.raises(InputError, match=f"--run {first}: not a trial run of this study"):
        tracking.trial_of_run(client, parent, first, "dev_q2ar")


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("a" * 32, ("a" * 32, "model/best.pt")),
        (f"runs:/{'b' * 32}/model/best.pt", ("b" * 32, "model/best.pt")),
        (f"runs:/{'c' * 32}/other/w.pt", ("c" * 32, "other/w.pt")),
        ("best.pt", None),
        (f"runs:/{'d' * 32}", None),
        ("runs:/not-an-id/model/best.pt", None),
    ],
)
def test_a_model_reference_is_a_run_id_or_a_runs_uri(ref, expected):
    if expected is None:
        with pytest.raises(InputError, match="not a run id or a runs:/<run id>/<path> URI"):
            tracking.parse_model_ref(ref)
    else:
        assert tracking.parse_model_ref(ref) == expected
