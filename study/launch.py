"""``vcr-study launch``: a study on Ray Tune, searched by Optuna (or a grid), stopped early by ASHA,
tracked in MLflow. Where its files go, and its record: ``study.store``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ray.tune import Callback

from study import builtin, cluster, features, plan, results, store, uris
from study.spaces import LABEL, SearchSpace, load_space, trial_values
from study.store import LaunchOptions
from study.trainable import resolve_config, train_trial
from vcrnet.config import TrainConfig
from vcrnet.errors import InputError
from vcrnet.features import FeatureChoice, FeatureSettings
from vcrnet.features.extract import RunShards
from vcrnet.train import OBJECTIVE

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

METRIC, MODE = OBJECTIVE, "max"  # trials are compared on the dev split, never on val


class FlatParams:
    """Tune config -> the MLflow params of a trial: its resolved TrainConfig (picklable)."""

    def __init__(self, space_path: str, overrides: dict):
        self.space_path, self.overrides = space_path, overrides

    def __call__(self, config: dict) -> dict:
        return resolve_config(self.space_path, config, self.overrides).to_dict()

    def approach(self, config: dict) -> str:
        """What ``best`` gives the trial's row: its grid row's label, else its method."""
        return trial_values(config).get(LABEL) or self(config)["method"]


class ThroughputRecorder(Callback):
    """A Tune callback (driver side): each epoch's seconds per training item into the home's
    throughput store, keyed by features, the trial's device and model (``--dry-run`` reads it)."""

    def __init__(self, settings: FeatureSettings, flat_params: FlatParams):
        self.settings, self.flat_params = settings, flat_params
        self._configs: dict[str, TrainConfig] = {}  # trial id -> its config (read its space once)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "device_kind" not in result or "epoch_seconds" not in result:
            return
        if trial.trial_id not in self._configs:
            self._configs[trial.trial_id] = TrainConfig.from_dict(self.flat_params(trial.config))
        key = _throughput_key(self.settings, result["device_kind"], self._configs[trial.trial_id])
        plan.record_epoch(
            plan.throughput_path(builtin.home()),
            key,
            result["epoch_seconds"],
            plan.train_items(result),
        )


def launch(
    options: LaunchOptions,
    resume: bool = False,
    choice: FeatureChoice = FeatureChoice(),
    verbose: bool = False,
) -> list[dict]:
    """Run (or resume) a study to its end; returns the best trial per method. ``choice``: the
    feature options given (``study.features`` resolves them; a resumed study keeps its own).
    The terminal shows the harness's lines; what the libraries print goes to the study's
    ``launch.log`` (and to the terminal too when ``verbose``). A new study refused before its
    record is written leaves no folder."""
    options, space = _resolved_options(options, resume)
    address = _preflight_checks(options, resume)
    made = [p for p in (builtin.home(), store.studies_root()) if not p.exists()]
    with store.running(options.name):
        try:
            return _run(options, space, address, resume, choice, verbose)
        finally:
            if not store.record_path(options.name).exists():
                shutil.rmtree(store.study_dir(options.name), ignore_errors=True)
                for folder in reversed(made):  # the home too, when this launch made it
                    with contextlib.suppress(OSError):
                        folder.rmdir()


def _run(
    options: LaunchOptions,
    space: SearchSpace,
    address: str | None,
    resume: bool,
    choice: FeatureChoice,
    verbose: bool,
) -> list[dict]:
    from study import console, tracking

    with console.captured(store.log_path(options.name), verbose) as shown:
        echo = shown.say
        echo(
            f"study {options.name}: {'resuming' if resume else 'starting'}; Ray, Tune, Optuna "
            f"and MLflow log to {shown.log}"
        )
        if not resume:  # before features that may take hours to extract (a copy of the
            # options: resolving features records them, which the extraction below must do)
            _check_free_space(
                options,
                space,
                study_features(
                    dataclasses.replace(options),
                    ("train", "val"),
                    choice,
                    echo=lambda line: None,
                    extract=False,
                ),
            )
        with contextlib.redirect_stderr(shown.err):  # extraction's progress bar on the terminal
            found = _features(options, choice, address, echo)  # trials only read them
        _start_ray(address, found, options)
        client, parent = _open_study(options, space, found.settings, resume)
        tuner = _build_or_restore_tuner(options, space, found, parent, resume, echo)
        status = tracking.KILLED  # unless the study runs to its end
        try:
            tuner.fit()
            _fail_orphaned_optuna_trials(options.name, echo)
            status = tracking.FINISHED
        finally:
            _close_study(client, parent, status, echo)
        try:  # a finished study stays finished whatever its report does
            written = write_ablations(options, parent, client)
            echo(
                f"ablations: {store.reports_dir(options.name)}/ (also in the MLflow parent run)"
                if written
                else "ablations: no trial runs to report"
            )
        except Exception as error:  # noqa: BLE001
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            echo(
                f"warning: ablations not written ({reason}); `vcr-study ablations --name "
                f"{options.name}` retries"
            )
        return results.best_per_method(client, parent, METRIC, results.approaches(space))


def write_ablations(options: LaunchOptions, parent: str, client: MlflowClient) -> list[Path]:
    """The study's ablation tables and plots under ``reports/<name>/``, also logged to its parent
    run (``study.ablations``); returns the files written (none: no trial runs yet)."""
    from study import paper
    from study.ablations import build_report

    try:
        space = load_space(options.space)
    except InputError:  # the space file moved since: the approaches and settings that ran
        space = None
    return build_report(
        client,
        parent,
        store.reports_dir(options.name),
        store.journal_path(options.name),
        options.name,
        comparable=paper.comparable(options.data),
        approaches=results.approaches(space) if space else None,
        space=space,
    )


def _resolved_options(options: LaunchOptions, resume: bool) -> tuple[LaunchOptions, SearchSpace]:
    """The options the study runs with (a resumed study's own, from its record), checked and
    named, and its search space; refused before anything is written where a new study would take
    the name of one that exists."""
    if resume:
        if not options.name:
            raise InputError("--resume: needs --name of the study to continue")
        options = store.load(options.name).options
    options.check()
    options.name = options.name or time.strftime("study-%Y%m%d-%H%M%S")
    if options.tracking_uri:  # a password in the URI is never saved with the study
        options.tracking_uri = uris.move_credentials_to_env(options.tracking_uri)
    space = load_space(options.space)
    options.space = str(space.path)
    _check_overrides(space, options.overrides)
    if not resume:
        _check_name_is_free(options.name)
    return options, space


def _check_name_is_free(name: str) -> None:
    """A new study's name must not be a study of this home, nor a Ray Tune experiment left under
    ray_results (Tune would overwrite its ``tuner.pkl``: ray-project/ray#35812)."""
    if store.record_path(name).exists():
        raise InputError(
            f"--name {name}: a study of that name exists; pass --resume to continue "
            f"it, choose another name, or remove it with `vcr-study delete --name "
            f"{name}`"
        )
    for leftover in (store.experiment_dir(name), store.journal_path(name)):
        if leftover.exists():
            raise InputError(
                f"--name {name}: {leftover} is left from an earlier study of that "
                f"name; remove it with `vcr-study delete --name {name}`, or choose "
                "another name"
            )


def _preflight_checks(options: LaunchOptions, resume: bool) -> str | None:
    """The tracking store (a new study's name free there), and a cluster's address, checked
    before features are resolved; returns the cluster's address (None: a local Ray)."""
    uri = store.tracking_uri(options)
    cluster.check_store(uri)
    if not resume and _store_exists(uri):  # before features that may take hours to extract
        from mlflow.tracking import MlflowClient

        from study import tracking

        tracking.check_name_free(MlflowClient(uri), options.name, builtin.home())
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        cluster.check_address(address)
        cluster.check_tracking(uri)
        cluster.check_reachable(address)
        cluster.check_token(address)
    return address


def _store_exists(uri: str) -> bool:
    """A tracking server, or a local store already made (looking creates a sqlite file)."""
    path = uris.local_store_file(uri)
    return path is None or path.exists()


def _features(
    options: LaunchOptions, choice: FeatureChoice, address: str | None, echo
) -> features.Features:
    """The trials' features; on a cluster, those missing extracted on its workers (joined
    first), with a GPU each if the trials have GPUs."""
    if not address:
        return study_features(options, ("train", "val"), choice, echo=echo)
    from study.extraction import Workers, on_ray

    cluster.connect(address)
    gpus = 1.0 if options.gpus_per_trial > 0 else 0.0
    workers = Workers(gpus=gpus, cpus=max(1.0, options.cpus_per_trial))
    return study_features(options, ("train", "val"), choice, echo=echo, run=on_ray(workers))


def _start_ray(address: str | None, found: features.Features, options: LaunchOptions) -> None:
    """A local Ray (its old session folders pruned first); or, on the cluster at ``address``
    (joined), a check that its every node sees the trials' inputs and results."""
    if not address:
        from ray._common.utils import get_default_ray_temp_dir

        from study.disk import prune_ray_sessions

        prune_ray_sessions(Path(options.ray_temp_dir or get_default_ray_temp_dir()))
        cluster.connect(None, options.ray_temp_dir)
        return
    cluster.check_shared(
        {
            f"feature cache ({split})": Path(path)
            for split, paths in found.paths().items()
            for path in paths
        },
        store.storage_root(),
    )


def _check_free_space(options: LaunchOptions, space: SearchSpace, found: features.Features) -> None:
    """Refuse a new study where the home has not the room its checkpoints will need."""
    if options.ignore_free_space:
        return
    the_plan = study_plan(options, space, found, *_local_resources())
    the_plan.check_free_space(builtin.home())


def dry_run(
    options: LaunchOptions,
    resume: bool = False,
    echo=print,
    choice: FeatureChoice = FeatureChoice(),
) -> plan.Plan:
    """Everything ``launch`` checks before it starts (space, options, name, tracking store,
    address, data, features cached or to extract, free space), and the study's plan, printed;
    no trial started, nothing written."""
    options, space = _resolved_options(options, resume)
    address = _preflight_checks(options, resume)
    found = study_features(options, ("train", "val"), choice, echo=echo, extract=False)
    missing = [
        f"{split} {kind}" for split, entries in found.splits.items() for kind in entries.computed
    ]
    resources = _cluster_resources(address) if address else _local_resources()
    echo(
        f"study {options.name}: {'resume' if resume else 'new'}, space {space.name}, "
        f"tracking {uris.redact(store.tracking_uri(options))}, "
        f"{'Ray cluster ' + address if address else 'a local Ray'} "
        f"({resources[0]:g} CPUs, {resources[1]:g} GPUs)"
    )
    echo(
        f"features ({found.settings.describe()}): "
        + (
            f"to extract first ({', '.join(missing)}; not in the times below)"
            if missing
            else "cached"
        )
    )
    the_plan = study_plan(options, space, found, *resources)
    for line in the_plan.lines():
        echo(line)
    return the_plan


def study_plan(
    options: LaunchOptions, space: SearchSpace, found: features.Features, cpus: float, gpus: float
) -> plan.Plan:
    """What the study will cost on ``cpus`` and ``gpus``, from this home's measured speed of
    the same features, device and model (else docs/benchmarks.md's)."""
    text_dim = _text_dim(found)
    config = _largest_config(space, options.overrides, text_dim)
    key = _throughput_key(found.settings, _device_kind(options, gpus), config)
    items = _train_items(found)
    return plan.estimate(
        trials=len(space.trials) if space.is_grid else options.trials,
        epochs=_epochs(space, options.overrides),
        grace=options.grace_period,
        asha=options.asha,
        concurrent=options.concurrent,
        cpus=cpus,
        cpus_per_trial=options.cpus_per_trial,
        gpus=gpus,
        gpus_per_trial=options.gpus_per_trial,
        train_items=round(items * (1 - config.dev_fraction)),
        seconds=plan.seconds_per_item(plan.throughput_path(builtin.home()), key),
        checkpoint=plan.checkpoint_bytes(config, text_dim),
        best=plan.best_bytes(config, text_dim),
        approaches=len(results.approaches(space)),
        disk_free=plan.free_bytes(builtin.home()),
        keep_checkpoints=options.keep_checkpoints,
    )


def _largest_config(space: SearchSpace, overrides: dict, text_dim: int) -> TrainConfig:
    """The trials' config with the largest checkpoint (a searched space: its fixed values)."""
    rows = [{**row, **overrides} for row in space.trials] if space.is_grid else [overrides]
    configs = [space.config(row) for row in rows]
    return max(configs, key=lambda c: plan.checkpoint_bytes(c, text_dim))


def _throughput_key(
    settings: FeatureSettings, device: str, config: TrainConfig
) -> plan.ThroughputKey:
    from vcrnet.features.cache import fingerprint

    return plan.ThroughputKey(
        fingerprint(settings.to_dict()), device, config.preset, config.batch_size
    )


def _device_kind(options: LaunchOptions, gpus: float) -> str:
    """The trials' device as the throughput store keys it (a cluster's GPU: this machine's, else
    the one the home's trials measured)."""
    if options.gpus_per_trial <= 0:
        return plan.device_kind("cpu", options.cpus_per_trial)
    import torch

    if not torch.cuda.is_available():  # the cluster's, as its trials recorded it
        return (
            plan.measured_gpu(plan.throughput_path(builtin.home()), options.gpus_per_trial)
            or "cuda:(a GPU this machine cannot name, none measured yet)"
        )
    return plan.device_kind("cuda", options.cpus_per_trial, options.gpus_per_trial)


def _train_items(found: features.Features) -> int:
    """The train split's questions (one a line of train.jsonl)."""
    with (found.data / "train.jsonl").open("rb") as lines:
        return sum(1 for line in lines if line.strip())


def _text_dim(found: features.Features) -> int:
    """The text features' width: the cache's, else the encoder's configuration."""
    from vcrnet.features import cache

    entry = found.splits["train"].text
    if cache.is_complete(entry):
        return int(cache.read_manifest(entry)["dim"])
    from transformers import AutoConfig

    from vcrnet.features.text import resolve_text_encoder

    name = resolve_text_encoder(found.settings.text_encoder)
    return int(AutoConfig.from_pretrained(name, local_files_only=True).hidden_size)


def _local_resources() -> tuple[float, float]:
    import torch

    return float(os.cpu_count() or 1), float(torch.cuda.device_count())


def _cluster_resources(address: str) -> tuple[float, float]:
    import ray

    cluster.connect(address)
    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0)), float(resources.get("GPU", 0))


def _open_study(
    options: LaunchOptions, space: SearchSpace, settings: FeatureSettings, resume: bool
) -> tuple[MlflowClient, str]:
    """The MLflow client and the study's parent run; a new study's record is saved once that run
    exists (so ``--resume`` always finds it), and its options are logged on it."""
    from mlflow.tracking import MlflowClient

    from study import tracking

    client = MlflowClient(store.tracking_uri(options))
    if resume:
        parent = store.load(options.name).parent_run_id
        tracking.reopen_study(client, parent)
        return client, parent
    parent = tracking.create_study(
        client, options.name, builtin.home(), space.description, space.varied()
    )
    store.save(store.StudyRecord(options, parent))
    _log_options(client, parent, options, space, settings)
    return client, parent


def _log_options(
    client: MlflowClient,
    parent: str,
    options: LaunchOptions,
    space: SearchSpace,
    settings: FeatureSettings,
) -> None:
    from mlflow.entities import Param

    params = {
        "space": space.name,
        "searcher": "grid" if space.is_grid else options.searcher,
        "asha": options.asha,
        "trials": len(space.trials) if space.is_grid else options.trials,
        "concurrent": options.concurrent,
        "seed": options.seed,
        **{f"set.{k}": v for k, v in options.overrides.items()},
        **{f"features.{k}": v for k, v in settings.to_dict().items()},
    }
    client.log_batch(parent, params=[Param(k, str(v)) for k, v in params.items()])
    client.log_artifact(parent, str(space.path))


def _build_or_restore_tuner(
    options: LaunchOptions,
    space: SearchSpace,
    found: features.Features,
    parent: str,
    resume: bool,
    echo,
):
    """Tune's experiment, restored where ``--resume`` finds one Tune saved, else a new one."""
    from ray import tune

    from study import progress, tracking
    from study.disk import CheckpointPruner

    trainable = _trainable(options, found)
    experiment = store.experiment_dir(options.name)
    if resume and tune.Tuner.can_restore(str(experiment)):
        echo(f"resuming study {options.name} from {experiment}")
        return tune.Tuner.restore(
            str(experiment), trainable, resume_unfinished=True, resume_errored=False
        )
    flat_params = FlatParams(options.space, options.overrides)
    tracker = tracking.MLflowTracker(
        store.tracking_uri(options),
        parent,
        flat_params,
        METRIC,
        inputs=found.paths(),
    )
    callbacks = [
        tracker,  # before the pruner: at the end it logs the best weights the pruner held
        progress.Progress(METRIC, echo),
        ThroughputRecorder(found.settings, flat_params),
        CheckpointPruner(METRIC, flat_params.approach, prune=not options.keep_checkpoints),
    ]
    return _new_tuner(options, space, trainable, callbacks)


def _trainable(options: LaunchOptions, found: features.Features):
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(
            train_trial,
            space_path=options.space,
            features=found.paths(),
            extra=found.extra(),
            cpus=options.cpus_per_trial,
            overrides=options.overrides,
            local_cache=options.local_cache,
        ),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )


def _fail_orphaned_optuna_trials(name: str, echo) -> None:
    from study import searchers

    journal = store.journal_path(name)
    if journal.is_file() and searchers.fail_orphans(str(journal), name):
        echo("marked the Optuna trials a driver restart left RUNNING as FAIL")


def _close_study(client: MlflowClient, parent: str, status: str, echo) -> None:
    from study import tracking

    left = tracking.close_study(client, parent, status)
    if left:
        echo(f"marked {left} trial run(s) left RUNNING as KILLED")


def _new_tuner(options: LaunchOptions, space: SearchSpace, trainable, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    epochs = _epochs(space, options.overrides)
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            metric=METRIC,
            mode=MODE,
            max_t=epochs,
            grace_period=min(options.grace_period, epochs),
        )
        if options.asha
        else FIFOScheduler()
    )
    if space.is_grid:
        param_space, search_alg, samples = {"grid": tune.grid_search(space.trials)}, None, 1
    else:
        param_space, samples = {}, options.trials
        search_alg = _optuna_search(options, space)
    run_config = tune.RunConfig(
        name=options.name,
        storage_path=str(store.storage_root()),
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=0,
    )
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=samples,
        max_concurrent_trials=options.concurrent,
    )
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
    )


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
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials(trials), group=True
        )


def _optuna_search(options: LaunchOptions, space: SearchSpace):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from study.searchers import RestartSafeOptunaSearch

    if options.searcher == "tpe":
        sampler = tpe_sampler(options.seed, options.trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=options.seed)
    storage = JournalStorage(JournalFileBackend(str(store.journal_path(options.name))))
    return RestartSafeOptunaSearch(
        space.suggest,
        metric=METRIC,
        mode=MODE,
        sampler=sampler,
        study_name=options.name,
        storage=storage,
        first_trials=_every_method_once(space, options.trials),
        max_epochs=_epochs(space, options.overrides),
    )


def _every_method_once(space: SearchSpace, trials: int) -> list[dict]:
    """The first trials of a study whose ``method`` is a choice: one per method, in the space's
    order, the rest of each drawn by the sampler (so that every method gets a row in ``best``);
    none where the budget is smaller than the choice."""
    param = space.params.get("method")
    if param is None or param.kind != "choice" or trials < len(param.args):
        return []
    return [{"method": method} for method in param.args]


def _epochs(space: SearchSpace, overrides: dict) -> int:
    if "epochs" in overrides:
        return int(overrides["epochs"])
    if "epochs" in space.fixed:
        return int(space.fixed["epochs"])
    candidates = [t.get("epochs") for t in space.trials or []] + [
        p.args[1] for p in space.params.values() if p.name == "epochs" and p.kind == "int"
    ]
    return max([int(c) for c in candidates if c] or [TrainConfig().epochs])


def _check_overrides(space: SearchSpace, overrides: dict) -> None:
    for key in overrides:
        if key in space.params:
            raise InputError(
                f"--set {key}: is searched by {space.path.name}; a --set would hide the search"
            )
    TrainConfig.from_dict({**space.fixed, **overrides}, where="--set")


def study_features(
    options: LaunchOptions,
    splits: tuple[str, ...],
    choice: FeatureChoice = FeatureChoice(),
    where: str = "the study",
    echo=print,
    run: RunShards | None = None,
    extract: bool = True,
) -> features.Features:
    """The study's features of ``splits``: resolved from ``choice`` when the study starts (and
    recorded in ``options.features``), the recorded ones afterwards (options may only agree);
    those missing extracted by ``run`` (default: in this process)."""
    data = Path(options.data).absolute() if options.data else None
    cache = Path(options.cache).absolute() if options.cache else None
    if options.features is None:
        found = features.resolve(data, cache, choice, splits, echo=echo, run=run, extract=extract)
        options.features = found.settings.to_dict()
        return found
    settings = FeatureSettings.from_dict(options.features, where=where)
    return features.fixed_features(
        data, cache, settings, choice, splits, where, echo=echo, run=run, extract=extract
    )
