"""Every method gets a row (the first trials cover each once, ``best`` lists each), and Optuna is
told each epoch and which trials the scheduler stopped. The searcher is driven directly, as Tune
drives it (``suggest``, ``on_trial_result`` per epoch the scheduler lets pass,
``on_trial_complete``), against a real journal; no Tune run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from study import search, store, tracking
from study.search import RestartSafeOptunaSearch, load_space, parse_space

METHODS = ["softmax", "gumbel", "reinforce", "direct16", "teacher"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _study_search(name: str, trials: int = 8):
    """The searcher ``launch`` builds for the default space (its journal under the home)."""
    store.study_dir(name).mkdir(parents=True, exist_ok=True)
    return search.optuna_searcher(
        load_space("default"),
        searcher="tpe",
        seed=0,
        trials=trials,
        journal=store.journal_path(name),
        study_name=name,
        metric="dev_q2ar",
        mode="max",
        max_epochs=load_space("default").max_epochs({}),
    )


def _trials(name: str) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(store.journal_path(name))))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_the_first_trials_cover_every_method_once_then_the_sampler_draws(home):
    searcher = _study_search("cover")
    configs = [searcher.suggest(f"t{i}") for i in range(8)]
    assert sorted(c["method"] for c in configs[:5]) == sorted(METHODS)
    gumbel = next(c for c in configs[:5] if c["method"] == "gumbel")
    assert {"tau_start", "anneal_epochs", "loss_ratio", "lr"} <= set(gumbel)  # the rest drawn
    softmax = next(c for c in configs[:5] if c["method"] == "softmax")
    assert not {"tau_start", "num_samples", "correct_answer_rate"} & set(softmax)
    enqueued = [t for t in _trials("cover") if "fixed_params" in t.system_attrs]
    assert [t.number for t in enqueued] == [0, 1, 2, 3, 4]


def test_a_restart_enqueues_nothing_more(home):
    searcher = _study_search("restart")
    assert searcher.suggest("t0")["method"] == "softmax"
    again = _study_search("restart")  # a driver restart: the journal holds the 4 still waiting
    methods = [again.suggest(f"u{i}")["method"] for i in range(6)]
    assert methods[:4] == METHODS[1:]
    trials = _trials("restart")
    assert len(trials) == 7 and sum("fixed_params" in t.system_attrs for t in trials) == 5


def test_no_enqueue_when_the_budget_is_below_the_methods():
    space = load_space("default")
    assert search.every_method_once(space, 4) == []
    assert search.every_method_once(space, 5) == [{"method": m} for m in METHODS]
    grid = parse_space("trials: [{method: softmax}, {method: gumbel}]")
    assert search.every_method_once(grid, 8) == []


def _searcher(
    tmp_path, max_epochs: int | None = 4, first_trials: list[dict] | None = None
) -> RestartSafeOptunaSearch:
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    return RestartSafeOptunaSearch(
        _space,
        metric="dev_q2ar",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        study_name="s",
        storage=storage,
        max_epochs=max_epochs,
        first_trials=first_trials,
    )


def _space(trial) -> dict:
    trial.suggest_float("x", 0.0, 1.0)
    return {}


def _epoch(epoch: int, value: float) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "dev_q2ar": value}


def _run(
    searcher,
    trial_id: str,
    passed: list[float],
    last: tuple[int, float] | None,
    error: bool = False,
) -> optuna.trial.FrozenTrial:
    """Tune's calls: each result the scheduler lets pass, then the trial's completion with its
    last result (the one the scheduler stopped it on, or a repeat of the last passed)."""
    searcher.suggest(trial_id)
    for i, value in enumerate(passed):
        searcher.on_trial_result(trial_id, _epoch(i + 1, value))
    searcher.on_trial_complete(trial_id, result=_epoch(*last) if last else None, error=error)
    return searcher._ot_study._storage.get_trial(searcher._ot_trials[trial_id]._trial_id)


def test_each_epoch_is_reported_and_a_scheduler_stop_is_pruned(tmp_path):
    searcher = _searcher(tmp_path)
    full = _run(searcher, "full", [0.3, 0.5, 0.4], (4, 0.45))  # ASHA stops at max_t
    assert full.state == TrialState.COMPLETE and full.value == 0.5  # the best epoch, as `best`
    assert full.intermediate_values == {1: 0.3, 2: 0.5, 3: 0.4, 4: 0.45}
    fifo = _run(searcher, "fifo", [0.3, 0.4, 0.2, 0.35], (4, 0.35))  # ends by itself
    assert fifo.state == TrialState.COMPLETE and fifo.value == 0.4
    stopped = _run(searcher, "stopped", [], (1, 0.25))  # ASHA's first rung
    assert stopped.state == TrialState.PRUNED and stopped.intermediate_values == {1: 0.25}
    later = _run(searcher, "later", [0.3], (2, 0.31))  # stopped on epoch 2
    assert later.state == TrialState.PRUNED and later.intermediate_values == {1: 0.3, 2: 0.31}
    patience = _run(searcher, "patience", [0.6, 0.5], (2, 0.5))  # fit stopped itself
    assert patience.state == TrialState.COMPLETE and patience.value == 0.6
    nan = _run(searcher, "nan", [math.nan, math.nan], (2, math.nan))
    assert nan.state == TrialState.FAIL and len(nan.intermediate_values) == 2
    failed = _run(searcher, "failed", [0.3], None, error=True)
    assert failed.state == TrialState.FAIL and failed.intermediate_values == {1: 0.3}


def test_without_max_epochs_nothing_is_pruned(tmp_path):
    trial = _run(_searcher(tmp_path, max_epochs=None), "t", [], (1, 0.25))
    assert trial.state == TrialState.COMPLETE and trial.value == 0.25


def test_a_restored_searcher_neither_reports_nor_tells_twice(tmp_path):
    searcher = _searcher(tmp_path)
    searcher.suggest("t")
    searcher.on_trial_result("t", _epoch(1, 0.3))
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's last experiment checkpoint
    searcher.on_trial_result("t", _epoch(2, 0.4))
    searcher.on_trial_complete("t", result=_epoch(3, 0.35))  # stopped on epoch 3: PRUNED
    older = _searcher(tmp_path)  # the driver restarted: restored from that checkpoint
    older.restore(str(tmp_path / "searcher.pkl"))
    older.on_trial_result("t", _epoch(2, 0.4))  # the resumed trial reports again
    older.on_trial_complete("t", result=_epoch(4, 0.5))
    trial = older._ot_study._storage.get_trial(older._ot_trials["t"]._trial_id)
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {1: 0.3, 2: 0.4, 3: 0.35}


def test_approaches_of_a_space():
    assert load_space("default").approaches() == METHODS
    grid = parse_space(
        "fixed: {method: teacher}\ntrials: [{label: R2C}, {label: new baseline},"
        " {method: softmax}, {label: R2C 2, method: teacher}]"
    )
    assert grid.approaches() == ["R2C", "new baseline", "softmax", "R2C 2"]


def test_best_lists_a_method_without_a_trial(home):
    client = MlflowClient(f"sqlite:///{home.parent / 'mlflow.db'}")
    parent = tracking.create_study(client, "b", home, store.artifacts_dir("b"))
    tracker = tracking.MLflowTracker(
        client.tracking_uri,
        parent,
        SimpleNamespace(params=lambda config: {"epochs": 2, **config}),
        "dev_q2ar",
    )
    for trial_id, method, values in (
        ("a", "softmax", [0.3, 0.5]),
        ("b", "gumbel", [0.4, 0.45]),
        ("c", "reinforce", [math.nan, math.nan]),
    ):
        trial = SimpleNamespace(trial_id=trial_id, config={"method": method})
        for epoch, value in enumerate(values, 1):
            tracker.on_trial_result(0, [], trial, _epoch(epoch, value))
        tracker.on_trial_complete(0, [], trial)
    best = tracking.best_per_approach(
        client, parent, "dev_q2ar", ["softmax", "gumbel", "reinforce", "teacher"]
    )
    assert [b["approach"] for b in best] == ["softmax", "gumbel", "reinforce", "teacher"]
    assert best[0]["dev_q2ar"] == 0.5 and best[1]["dev_q2ar"] == 0.45
    assert best[2]["status"] == "no result" and best[2]["trials"] == 1
    missing = best[3]
    assert math.isnan(missing.pop("dev_q2ar"))
    assert missing == {
        "approach": "teacher",
        "method": "teacher",
        "trials": 0,
        "status": "no trial",
        "metrics": {},
        "config": {},
        "trial_id": "",
        "run_id": "",
        "model": "",
    }
    assert (
        tracking.best_per_approach(client, parent, "dev_q2ar") == best[:2]
    )  # no approaches: as before


@pytest.mark.slow
def test_tune_tells_a_scheduler_stop_apart(ray_local, tmp_path):
    """Ray's side of the contract: ASHA's stops (at rungs 1 and 2) reach Optuna as PRUNED; a
    trial that ends itself (epoch 3, as fit's patience does) or runs out (epoch 4, where ASHA
    stops it at max_t) as COMPLETE."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    def toy_trial(config: dict) -> None:  # defined here: Ray's workers cannot import this file
        """4 epochs of a constant score; a top score ends itself after epoch 3 (no ASHA rung)."""
        for epoch in (1, 2, 3, 4):
            tune.report({"epoch": epoch, "dev_q2ar": config["x"]})
            if config["x"] > 0.9 and epoch == 3:
                return

    searcher = _searcher(tmp_path, first_trials=[{"x": 1.0}])  # the best: never below a rung
    tuner = tune.Tuner(
        toy_trial,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=8,
            max_concurrent_trials=2,
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                metric="dev_q2ar",
                mode="max",
                max_t=4,
                grace_period=1,
                reduction_factor=2,
            ),
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0),
    )
    results = tuner.fit()
    ended = {r.metrics["trial_id"]: r.metrics["epoch"] for r in results}
    states = {}
    for trial_id, epoch in ended.items():
        trial = searcher._ot_study._storage.get_trial(searcher._ot_trials[trial_id]._trial_id)
        assert sorted(trial.intermediate_values) == list(range(1, epoch + 1))
        states[epoch] = states.get(epoch, set()) | {trial.state}
        assert trial.state == (TrialState.PRUNED if epoch < 3 else TrialState.COMPLETE)
    assert states[3] == {TrialState.COMPLETE} and TrialState.PRUNED in states.get(
        1, set()
    ) | states.get(2, set()), states
