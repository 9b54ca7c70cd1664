"""``vcr-study launch``: a study on Ray Tune, searched by Optuna (or a grid), stopped early by ASHA,
tracked in MLflow.

Where things go (all absolute, under ``builtin.home()``):

- ``studies/<name>/study.json``: the launch options, so that ``--resume`` and ``best`` find the
  study; ``studies/<name>/optuna.journal``: the Optuna study (optuna-dashboard reads it);
- ``ray_results/<name>/``: Ray Tune's experiment and the trials' checkpoints;
- ``mlflow.db`` and ``mlartifacts/``: the MLflow store (or ``--tracking-uri``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from study import builtin, cluster, features, uris
from study.spaces import SearchSpace, load_space
from study.trainable import resolve_config, train_trial
from vcrnet.atomic import write_text
from vcrnet.config import TrainConfig
from vcrnet.errors import InputError
from vcrnet.features import FeatureChoice, FeatureSettings
from vcrnet.train import OBJECTIVE

METRIC, MODE = OBJECTIVE, "max"  # trials are compared on the dev split, never on val
SEARCHERS = ("tpe", "random")


@dataclass
class LaunchOptions:
    name: str = ""  # "" -> study-YYYYmmdd-HHMMSS
    space: str = "default"
    trials: int = 8  # for a distribution space; a grid runs each of its trials once
    concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    searcher: str = "tpe"
    asha: bool = True
    grace_period: int = 1
    overrides: dict = field(default_factory=dict)  # --set, and --epochs
    seed: int = 0
    data: str | None = None
    cache: str | None = None
    features: dict | None = None  # FeatureSettings.to_dict(), resolved when the study starts
    address: str | None = None
    tracking_uri: str | None = None
    max_failures: int = 2

    def check(self) -> None:
        checks = [(self.trials >= 1, "--trials", "at least 1"),
                  (self.concurrent >= 1, "--concurrent", "at least 1"),
                  (self.cpus_per_trial > 0, "--cpus-per-trial", "positive"),
                  (self.gpus_per_trial >= 0, "--gpus-per-trial", "0 or more"),
                  (self.searcher in SEARCHERS, "--searcher", f"one of {', '.join(SEARCHERS)}"),
                  (self.grace_period >= 1, "--grace-period", "at least 1"),
                  (self.max_failures >= 0, "--max-failures", "0 or more")]
        for ok, option, expected in checks:
            if not ok:
                raise InputError(f"{option}: must be {expected}")
        if self.name and not all(c.isalnum() or c in "-_." for c in self.name):
            raise InputError(f"--name {self.name!r}: use letters, digits, '-', '_' and '.'")


def study_dir(name: str) -> Path:
    return builtin.home() / "studies" / name


def storage_root() -> Path:
    return builtin.home() / "ray_results"


def load_options(name: str) -> LaunchOptions:
    path = study_dir(name) / "study.json"
    if not path.is_file():
        known = sorted(p.name for p in (builtin.home() / "studies").glob("*") if p.is_dir())
        raise InputError(f"--name {name}: no such study under {builtin.home()}"
                         + (f" (there are: {', '.join(known)})" if known else ""))
    saved = json.loads(path.read_text())
    if "features" not in saved:  # before 2026-11-28: selected on val, features not recorded
        raise InputError(f"--name {name}: made by an earlier vcr-study (it selected on val and "
                         "did not record its features): launch a new study")
    return LaunchOptions(**{k: v for k, v in saved.items() if k != "parent_run_id"})


def reports_dir(name: str) -> Path:
    return builtin.home() / "reports" / name


def parent_run_id(name: str) -> str:
    return json.loads((study_dir(name) / "study.json").read_text())["parent_run_id"]


def tracking_uri(options: LaunchOptions) -> str:
    from study.tracking import default_tracking_uri

    return options.tracking_uri or default_tracking_uri(builtin.home())


class FlatParams:
    """Tune config -> the MLflow params of a trial: its resolved TrainConfig (picklable)."""

    def __init__(self, space_path: str, overrides: dict):
        self.space_path, self.overrides = space_path, overrides

    def __call__(self, config: dict) -> dict:
        return resolve_config(self.space_path, config, self.overrides).to_dict()


def launch(options: LaunchOptions, resume: bool = False, echo=print,
           choice: FeatureChoice = FeatureChoice()) -> list[dict]:
    """Run (or resume) a study to its end; returns the best trial per method. ``choice``: the
    feature options given (``study.features`` resolves them; a resumed study keeps its own)."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient
    from ray import tune

    from study import progress, results, searchers, tracking

    if resume:
        if not options.name:
            raise InputError("--resume: needs --name of the study to continue")
        options = load_options(options.name)
    options.check()
    options.name = options.name or time.strftime("study-%Y%m%d-%H%M%S")
    if options.tracking_uri:  # a password in the URI is never saved with the study
        options.tracking_uri = uris.move_credentials_to_env(options.tracking_uri)
    space = load_space(options.space)
    options.space = str(space.path)
    _check_overrides(space, options.overrides)
    folder = study_dir(options.name)
    experiment_path = storage_root() / options.name
    if not resume and folder.exists():
        raise InputError(f"--name {options.name}: a study of that name exists; pass --resume "
                         "to continue it, or choose another name")

    cluster.check_store(tracking_uri(options))
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        cluster.check_address(address)
        cluster.check_tracking(tracking_uri(options))
        cluster.check_reachable(address)
    found = study_features(options, ("train", "val"), choice, echo=echo)  # trials only read it
    entries = found.paths()
    cluster.connect(address)
    if address:  # trials may run on other nodes: they must see the cache and the results
        cluster.check_shared({f"feature cache ({split})": Path(path) for split, paths
                              in entries.items() for path in paths}, storage_root())
    client = MlflowClient(tracking_uri(options))
    parent = tracking.open_study(client, options.name, builtin.home(), space.description)
    if not resume:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "study.json", {**dataclasses.asdict(options),
                                            "parent_run_id": parent})
        client.log_batch(parent, params=[Param(k, str(v)) for k, v in {
            "space": space.name, "searcher": "grid" if space.is_grid else options.searcher,
            "asha": options.asha, "trials": len(space.trials) if space.is_grid
            else options.trials, "concurrent": options.concurrent, "seed": options.seed,
            **{f"set.{k}": v for k, v in options.overrides.items()},
            **{f"features.{k}": v for k, v in found.settings.to_dict().items()}}.items()])
        client.log_artifact(parent, str(space.path))

    trainable = tune.with_resources(
        tune.with_parameters(train_trial, space_path=options.space, features=entries,
                             extra=found.extra(), cpus=options.cpus_per_trial,
                             overrides=options.overrides),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
    if resume and tune.Tuner.can_restore(str(experiment_path)):
        echo(f"resuming study {options.name} from {experiment_path}")
        tuner = tune.Tuner.restore(str(experiment_path), trainable, resume_unfinished=True,
                                   resume_errored=False)
    else:
        tracker = tracking.MLflowTracker(tracking_uri(options), parent,
                                         FlatParams(options.space, options.overrides), METRIC)
        tuner = _new_tuner(options, space, trainable, experiment_path, folder,
                           [tracker, progress.Progress(METRIC, echo)])
    status = tracking.FINISHED
    try:
        tuner.fit()
        journal = folder / "optuna.journal"
        if journal.is_file() and searchers.fail_orphans(str(journal), options.name):
            echo("marked the Optuna trials a driver restart left RUNNING as FAIL")
    except BaseException:
        status = tracking.KILLED
        raise
    finally:
        left = tracking.close_study(client, parent, status)
        if left:
            echo(f"marked {left} trial run(s) left RUNNING as KILLED")
    return results.best_per_method(client, parent, METRIC)


def _new_tuner(options: LaunchOptions, space: SearchSpace, trainable, experiment_path: Path,
               folder: Path, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    epochs = _epochs(space, options.overrides)
    scheduler = (ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode=MODE,
                               max_t=epochs, grace_period=min(options.grace_period, epochs))
                 if options.asha else FIFOScheduler())
    if space.is_grid:
        param_space, search_alg, samples = {"grid": tune.grid_search(space.trials)}, None, 1
    else:
        param_space, samples = {}, options.trials
        search_alg = _optuna_search(options, space, folder)
    run_config = tune.RunConfig(
        name=options.name, storage_path=str(experiment_path.parent), callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=0)
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=scheduler,
                                  num_samples=samples,
                                  max_concurrent_trials=options.concurrent)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                      run_config=run_config)


def startup_trials(trials: int) -> int:
    """TPE's random start for a budget of ``trials``: a quarter of it, 3 to 10 (Optuna's own
    default, 10, would leave the default study's 8 trials all random, and spent 10 of 24 trials
    before TPE started in the search-efficiency benchmark, docs/benchmarks.md)."""
    return max(3, min(10, trials // 4))


def tpe_sampler(seed: int, trials: int):
    """Optuna's TPE for a budget of ``trials``. Optuna 5's TPE is multivariate and uses a constant
    liar (for trials running at once) by default; ``group=True`` makes it model each method's own
    parameters (drawn only under that method) jointly too, instead of one at a time."""
    import optuna

    with warnings.catch_warnings():  # Optuna 5 still marks ``group`` experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(trials),
                                          group=True)


def _optuna_search(options: LaunchOptions, space: SearchSpace, folder: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from study.searchers import RestartSafeOptunaSearch
    if options.searcher == "tpe":
        sampler = tpe_sampler(options.seed, options.trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=options.seed)
    storage = JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
    return RestartSafeOptunaSearch(space.suggest, metric=METRIC, mode=MODE, sampler=sampler,
                                   study_name=options.name, storage=storage)


def _epochs(space: SearchSpace, overrides: dict) -> int:
    if "epochs" in overrides:
        return int(overrides["epochs"])
    if "epochs" in space.fixed:
        return int(space.fixed["epochs"])
    candidates = [t.get("epochs") for t in space.trials or []] + [
        p.args[1] for p in space.params.values() if p.name == "epochs" and p.kind == "int"]
    return max([int(c) for c in candidates if c] or [TrainConfig().epochs])


def _check_overrides(space: SearchSpace, overrides: dict) -> None:
    for key in overrides:
        if key in space.params:
            raise InputError(f"--set {key}: is searched by {space.path.name}; a --set would "
                             "hide the search")
    TrainConfig.from_dict({**space.fixed, **overrides}, where="--set")


def study_features(options: LaunchOptions, splits: tuple[str, ...],
                   choice: FeatureChoice = FeatureChoice(), where: str = "the study",
                   echo=print) -> features.Features:
    """The study's features of ``splits``: resolved from ``choice`` when the study starts (and
    recorded in ``options.features``), the recorded ones afterwards (options may only agree)."""
    data = Path(options.data).absolute() if options.data else None
    cache = Path(options.cache).absolute() if options.cache else None
    if options.features is None:
        found = features.resolve(data, cache, choice, splits, echo=echo)
        options.features = found.settings.to_dict()
        return found
    settings = FeatureSettings.from_dict(options.features, where=where)
    return features.fixed_features(data, cache, settings, choice, splits, where, echo=echo)


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str))
