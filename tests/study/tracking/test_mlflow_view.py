"""What a researcher finds in MLflow: the study's experiment marked as model training, each trial
run's feature cache entries as dataset inputs and its system metrics, and the ablations written
when a study ends. Real MLflow sqlite stores, a real local Ray (num_cpus=2)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from study import store, tracking
from study.launch.trainable import SystemSampler
from study.tracking import trial_runs
from vcrnet.features.cache import entry_dir, fingerprint

SETTINGS = {"image_size": [256, 128]}
SYSTEM = (
    "system/cpu_utilization_percentage",
    "system/system_memory_usage_megabytes",
    "system/system_memory_usage_percentage",
    "system/trial_cpu_utilization_percentage",
    "system/trial_memory_rss_megabytes",
)


@pytest.fixture
def study_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def client(study_home) -> MlflowClient:
    return MlflowClient(store.default_tracking_uri(store.home()))


def feature_paths(root) -> dict[str, tuple[str, str]]:
    """``Features.paths()`` of a cache at ``root`` (the entries need not exist to be named)."""
    return {
        split: tuple(str(entry_dir(root, split, kind, SETTINGS)) for kind in ("text", "objects"))
        for split in ("train", "val")
    }


def test_a_study_experiment_is_marked_model_training_new_or_left_empty(client, study_home):
    parent = tracking.create_study(client, "k1", study_home, store.artifacts_dir("k1"))
    experiment = client.get_experiment(client.get_run(parent).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # an empty experiment left by a launch that died before its parent run gets the tag too
    left = client.create_experiment("k2")
    parent = tracking.create_study(client, "k2", study_home, store.artifacts_dir("k2"))
    assert client.get_run(parent).info.experiment_id == left
    assert client.get_experiment(left).tags["mlflow.experimentKind"] == "custom_model_development"
    link = f"http://127.0.0.1:5000/#/experiments/{left}/runs?workflowType=machine_learning"
    assert tracking.ui_url("http://127.0.0.1:5000/", left, shared_view=False) == link
    assert tracking.ui_url("http://127.0.0.1:5000/", left) == link + "&viewStateShareKey=vcr-study"


def test_a_study_experiment_opens_on_its_trials_ranked_with_their_settings(client, study_home):
    parent = tracking.create_study(
        client, "k3", study_home, store.artifacts_dir("k3"), params=["lr", "loss_ratio"]
    )
    experiment = client.get_experiment(client.get_run(parent).info.experiment_id)
    view = json.loads(experiment.tags["mlflow.sharedViewState.vcr-study"])  # the Share button's
    assert view["orderByKey"] == "metrics.`best_dev_q2ar`" and view["orderByAsc"] is False
    assert view["selectedColumns"][:3] == [
        "tags.`method`",
        "tags.`final_status`",
        "metrics.`best_dev_q2ar`",
    ]
    assert {"metrics.`val_q2ar`", "params.`lr`", "params.`loss_ratio`"} <= set(
        view["selectedColumns"]
    )


def test_feature_inputs_are_named_by_split_and_kind_digested_by_fingerprint(tmp_path):
    inputs = tracking.feature_inputs(feature_paths(tmp_path / "cache"))
    assert [i.dataset.name for i in inputs] == [
        "train-text",
        "train-objects",
        "val-text",
        "val-objects",
    ]
    assert {i.dataset.digest for i in inputs} == {fingerprint(SETTINGS)}
    assert [i.tags[0].value for i in inputs] == ["train", "train", "val", "val"]
    assert all(i.dataset.source.startswith(str(tmp_path / "cache")) for i in inputs)


def test_the_system_sampler_reports_mlflow_names_on_cpu():
    sampler = SystemSampler("cpu")
    sum(i * i for i in range(200_000))  # some work to measure
    metrics = sampler.sample()
    assert set(metrics) == set(SYSTEM)
    assert 0 <= metrics["system/system_memory_usage_percentage"] <= 100
    assert metrics["system/trial_memory_rss_megabytes"] > 10


def test_trial_runs_get_their_inputs_and_system_metrics(ray_local, client, study_home, tmp_path):
    from ray import tune

    epochs = 3

    def trial(config):  # reports as study.launch.trainable.train_trial does
        import ray

        sampler, node = SystemSampler("cpu"), ray.get_runtime_context().get_node_id()
        for epoch in range(1, epochs + 1):
            tune.report(
                {
                    "epoch": epoch,
                    "val_q2ar": config["x"] * epoch,
                    **sampler.sample(),
                    "node_id": node,
                }
            )

    parent = tracking.create_study(client, "sys", store.home(), store.artifacts_dir("sys"))
    paths = feature_paths(tmp_path / "cache")
    tracker = tracking.MLflowTracker(
        client.tracking_uri,
        parent,
        SimpleNamespace(params=lambda config: {"method": "softmax", "epochs": epochs, **config}),
        "val_q2ar",
        inputs=paths,
    )
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 0.5}),
        param_space={"x": tune.grid_search([0.1, 0.2])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(
            name="sys", storage_path=str(store.storage_root()), callbacks=[tracker], verbose=0
        ),
    )
    grid = tuner.fit()
    assert not grid.errors
    assert set(SYSTEM) <= set(grid[0].metrics)  # in the trial's reported result
    runs = trial_runs(client, parent)
    assert len(runs) == 2
    for run_id in runs["run_id"]:
        run = client.get_run(run_id)
        datasets = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
        assert set(datasets) == {"train-text", "train-objects", "val-text", "val-objects"}
        assert {d.digest for d in datasets.values()} == {fingerprint(SETTINGS)}
        assert datasets["val-objects"].source == paths["val"][1]
        for key in SYSTEM:  # logged every epoch, under MLflow's own names
            assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3]
        assert run.data.tags["node_id"]  # where those numbers come from


@pytest.mark.slow
def test_a_launched_study_logs_inputs_system_metrics_and_ablations(
    ray_local, study_home, cli, synthetic_dir, synthetic_features
):
    cache = synthetic_features.text.parent
    code, out, err = cli(
        "launch",
        "--data",
        synthetic_dir,
        "--cache",
        cache,
        "--image-size",
        "256x128",
        "--concurrent",
        "2",
        "--name",
        "v1",
        "--space",
        "smoke",
        "--trials",
        "2",
        "--epochs",
        "1",
    )
    assert code == 0, err
    assert f"ablations: {store.reports_dir('v1')}/ (also in the MLflow parent run)" in out
    assert (store.reports_dir("v1") / "trials.csv").is_file()
    options, parent = store.load("v1")
    client = MlflowClient(store.tracking_uri(options))
    assert any(a.path == "ablations" for a in client.list_artifacts(parent))
    for run_id in trial_runs(client, parent)["run_id"]:
        run = client.get_run(run_id)
        digests = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
        assert set(digests) == {"train-text", "train-objects", "val-text", "val-objects"}
        assert digests["train-text"] == synthetic_features.text.name.rsplit("-", 1)[-1]
        assert set(SYSTEM) <= set(run.data.metrics) and run.data.tags["node_id"]


def test_a_trial_tune_saved_as_ended_gets_its_run_closed_when_the_driver_comes_back(
    client, study_home
):
    """A driver killed after Tune saved a trial TERMINATED but before the tracker closed its run:
    the restored trial never completes again, so the experiment's end closes its run (and a
    trial still running is left to its own end)."""
    from ray.tune.experiment import Trial

    parent = tracking.create_study(client, "ended", store.home(), store.artifacts_dir("ended"))
    configs = SimpleNamespace(params=lambda config: {"method": "softmax", "epochs": 2})
    tracker = tracking.MLflowTracker(client.tracking_uri, parent, configs, "val_q2ar")
    ended = SimpleNamespace(trial_id="t_ended", config={}, status=Trial.TERMINATED, path="")
    running = SimpleNamespace(trial_id="t_running", config={}, status=Trial.RUNNING, path="")
    for trial in (ended, running):
        tracker.on_trial_start(0, [], trial)
        for epoch in (1, 2):
            tracker.on_trial_result(0, [], trial, {"epoch": epoch, "val_q2ar": 0.1 * epoch})

    restarted = tracking.MLflowTracker(client.tracking_uri, parent, configs, "val_q2ar")
    restarted.close_ended([ended, running])
    runs = trial_runs(client, parent).set_index("trial_id")
    assert runs.loc["t_ended", "status"] == "FINISHED"
    assert runs.loc["t_ended", "final_status"] == "COMPLETED"
    assert runs.loc["t_running", "status"] == "RUNNING"
