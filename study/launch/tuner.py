"""The study's Ray Tune experiment: the trainable with its resources and inputs, ASHA (or FIFO),
the searcher (a grid, or Optuna), the callbacks that track, show progress, record speed and prune
checkpoints; restored from Tune's saved state on ``--resume``."""

from __future__ import annotations

from ray.tune import Callback

from study import cluster, store, tracking
from study.inputs import Features
from study.launch.progress import Progress
from study.launch.retention import CheckpointPruner
from study.launch.throughput import record_epoch, throughput_key, train_items
from study.launch.trainable import train_trial
from study.search import SearchSpace, TrialConfigs, optuna_searcher
from study.store import LaunchOptions
from vcrnet.config import TrainConfig
from vcrnet.features import FeatureSettings
from vcrnet.metrics import OBJECTIVE

MODE = "max"  # trials are compared on OBJECTIVE, the dev split's Q->AR, never on val


def build_or_restore(
    options: LaunchOptions,
    space: SearchSpace,
    found: Features,
    parent: str,
    resume: bool,
    echo,
):
    """Tune's experiment, restored where ``--resume`` finds one Tune saved, else a new one."""
    from ray import tune

    configs = TrialConfigs(space, options.overrides)
    trainable = trial_trainable(options, configs, found)
    experiment = store.experiment_dir(options.name)
    if resume and tune.Tuner.can_restore(str(experiment)):
        echo(f"resuming study {options.name} from {experiment}")
        return tune.Tuner.restore(
            str(experiment), trainable, resume_unfinished=True, resume_errored=False
        )
    tracker = tracking.MLflowTracker(
        store.tracking_uri(options), parent, configs, OBJECTIVE, inputs=found.paths()
    )
    callbacks = [
        tracker,  # before the pruner: at the end it logs the best weights the pruner held
        Progress(OBJECTIVE, echo, cluster.why_waiting),
        ThroughputRecorder(found.settings, configs),
        CheckpointPruner(OBJECTIVE, configs.approach, prune=not options.keep_checkpoints),
    ]
    return _new_tuner(options, space, trainable, callbacks)


def trial_trainable(options: LaunchOptions, configs, found: Features, **more):
    """``train_trial`` with the parsed space (``configs``: no file to read on the workers), the
    features' paths, the trial's resources, and ``more`` of its keywords (the finals'
    ``predictions`` and ``test_labels``)."""
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(
            train_trial,
            configs=configs,
            features=found.paths(),
            extra=found.extra(),
            cpus=options.cpus_per_trial,
            local_cache=options.local_cache,
            **more,
        ),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )


def _new_tuner(options: LaunchOptions, space: SearchSpace, trainable, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    epochs = space.max_epochs(options.overrides)
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            metric=OBJECTIVE,
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
        search_alg = optuna_searcher(
            space,
            searcher=options.searcher,
            seed=options.seed,
            trials=options.trials,
            journal=store.journal_path(options.name),
            study_name=options.name,
            metric=OBJECTIVE,
            mode=MODE,
            max_epochs=epochs,
        )
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


class ThroughputRecorder(Callback):
    """A Tune callback (driver side): each epoch's seconds per training item into the home's
    throughput store, keyed by features, the trial's device and model (``--dry-run`` reads it)."""

    def __init__(self, settings: FeatureSettings, configs: TrialConfigs):
        self.settings, self.configs = settings, configs
        self._resolved: dict[str, TrainConfig] = {}  # trial id -> its config (resolved once)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "device_kind" not in result or "epoch_seconds" not in result:
            return
        if trial.trial_id not in self._resolved:
            self._resolved[trial.trial_id] = self.configs.config(trial.config)
        key = throughput_key(self.settings, result["device_kind"], self._resolved[trial.trial_id])
        record_epoch(store.throughput_file(), key, result["epoch_seconds"], train_items(result))
