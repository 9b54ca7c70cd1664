"""``vcr-study finals``: each approach's best configurations of the search re-trained with new
seeds, as Ray Tune trials of the study, then the verdict between the approaches.

The finals go through ``launch``'s steps with other trials: the same preflight (store, cluster,
a trial's resources against the nodes), the features (test too, for the submission; on a
cluster extracted on its workers), Ray, the study's parent run reopened, a Tune experiment with
``MLflowTracker``'s exactly-once runs (``FinalsTracker``: finals tags, and the predictions at
the end), the progress line and Tune's retries; without ASHA (every seed trains its epochs) and
without the searcher (the trials are a grid: ``study.search.finals_grid``). A finals trial is
``train_trial`` with ``predictions=True``: its checkpoints carry its best epoch's val and test
predictions. Killed, ``finals --resume`` restores Tune's experiment (``ray_results/<name>/
finals``): a trial that ended is not run again, a trial cut off goes on from its checkpoint.
When every trial has ended, ``reports.write_finals`` writes the verdict and the submission.
"""

from __future__ import annotations

import dataclasses

from study import cluster, reports, store, tracking
from study.launch import preflight
from study.launch.console import captured
from study.launch.progress import Progress
from study.launch.steps import features, start_ray
from study.launch.tuner import ThroughputRecorder, trial_trainable
from study.search import FinalConfigs, finals_grid
from study.store import FinalsRecord, LaunchOptions
from vcrnet.data.records import held_out_labels
from vcrnet.errors import InputError
from vcrnet.features import FeatureChoice
from vcrnet.metrics import OBJECTIVE

SPLITS = ("train", "val", "test")  # test: the submission, and its score where labels are known


def run_finals(
    name: str,
    asked: FinalsRecord,
    resume: bool = False,
    verbose: bool = False,
    echo=print,
    address: str | None = None,
) -> reports.FinalsReport:
    """Run (or, ``resume``, finish) study ``name``'s finals as ``asked`` (no entries: they are
    made here; a resume keeps the recorded ones and options), then write the verdict.
    ``address``: the Ray cluster to run on now (default: the study's own; a requeued SLURM job
    has a new one)."""
    asked.check()
    study = store.load(name)
    store.check_resumable(name)
    if address:
        study = study._replace(options=dataclasses.replace(study.options, address=address))
    _options(study.options, asked)  # the options asked for, checked before anything else
    with store.running(name):
        recorded = store.load_finals(name)
        if resume and recorded is None:
            raise InputError(
                f"--name {name}: it has no finals to resume; `vcr-study finals --name {name}` "
                "starts them"
            )
        if not resume and recorded is not None:
            raise InputError(
                f"--name {name}: its finals exist ({store.finals_path(name)}); --resume "
                f"finishes them, `vcr-study verdict --name {name}` reads them"
            )
        record = recorded if resume else asked
        options = _options(study.options, record)
        address = preflight.check_store_and_cluster(options, resume=True)
        if address is None:
            preflight.check_resources(options, None)
        client = tracking.writing_client(store.tracking_uri(options))
        if not resume:
            finalists = _finalists(client, study.parent_run_id, record, name)
            entries = finals_grid(finalists, record.seeds, record.epochs)
            record = dataclasses.replace(record, entries=entries)
        with captured(store.log_path(name), verbose) as shown:
            _run(options, record, study.parent_run_id, client, address, resume, shown.say)
    return reports.write_finals(name, echo=echo)


def _finalists(client, parent: str, record: FinalsRecord, name: str) -> list[dict]:
    """The search trials the finals re-train: each approach's ``top`` best on dev, or only
    ``method``'s, or only the trial of MLflow run ``run``; an empty choice is refused."""
    if record.run:
        run_id, _ = tracking.parse_model_ref(record.run)
        return [{**tracking.trial_of_run(client, parent, run_id, OBJECTIVE), "rank": 1}]
    finalists = tracking.top_per_approach(client, parent, OBJECTIVE, record.top)
    if not finalists:
        raise InputError(f"--name {name}: the study has no trial with a dev result to re-train")
    if record.method:
        chosen = [f for f in finalists if record.method in (f["approach"], f["method"])]
        if not chosen:
            approaches = ", ".join(sorted({f["approach"] for f in finalists}))
            raise InputError(
                f"--method {record.method}: no trial of that method or row with a dev result "
                f"(the study has {approaches})"
            )
        return chosen
    return finalists


def _options(options: LaunchOptions, record: FinalsRecord) -> LaunchOptions:
    """The study's options with the finals' concurrency and resources, checked."""
    changed = dataclasses.replace(
        options,
        concurrent=record.concurrent,
        cpus_per_trial=record.cpus_per_trial,
        gpus_per_trial=record.gpus_per_trial,
        asha=False,
    )
    changed.check()
    return changed


def _run(
    options: LaunchOptions,
    record: FinalsRecord,
    parent: str,
    client,
    address: str | None,
    resume: bool,
    echo,
) -> None:
    from ray import tune

    name = options.name
    approaches = {e["approach"] for e in record.entries}
    echo(
        f"study {name}: {'resuming the' if resume else 'starting'} finals: {len(approaches)} "
        f"approach(es) x {record.top} configuration(s) x {record.seeds} seed(s) = "
        f"{len(record.entries)} trials, {record.concurrent} at a time"
    )
    found = features(options, FeatureChoice(), address, echo, SPLITS)
    if not resume:  # every check passed: the finals exist from here on
        store.save_finals(name, record)
    start_ray(address, found, options)
    tracking.reopen_study(client, parent)
    configs = FinalConfigs()
    trainable = trial_trainable(
        options,
        configs,
        found,
        predictions=True,
        test_labels=held_out_labels(found.data, "test"),
    )
    experiment = store.finals_experiment_dir(name)
    if resume and tune.Tuner.can_restore(str(experiment)):
        tuned = tune.Tuner.restore(
            str(experiment), trainable, resume_unfinished=True, resume_errored=False
        )
    else:
        callbacks = [
            tracking.FinalsTracker(
                store.tracking_uri(options),
                parent,
                configs,
                OBJECTIVE,
                inputs=found.paths(),
            ),
            Progress(OBJECTIVE, echo, cluster.why_waiting),
            ThroughputRecorder(found.settings, configs),
        ]
        tuned = tune.Tuner(
            trainable,
            param_space={"grid": tune.grid_search(record.entries)},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=record.concurrent),
            run_config=tune.RunConfig(
                name=experiment.name,
                storage_path=str(experiment.parent),
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=0,
            ),
        )
    status = tracking.KILLED
    try:
        tuned.fit()
        status = tracking.FINISHED
    finally:
        left = tracking.close_study(client, parent, status)
        if left:
            echo(f"marked {left} finals run(s) left RUNNING as KILLED")
