"""``vcr-study launch``, top to bottom: a study on Ray Tune, searched by Optuna (or a grid),
stopped early by ASHA, tracked in MLflow; and ``--dry-run``, the same checks and the plan.

1. ``preflight``: options, space, name, tracking store, cluster address (nothing written);
2. the free space for the study's checkpoints (a new study);
3. the features: resolved, the missing ones extracted (on a cluster, on its workers);
4. Ray: a local one (old session folders pruned), or the cluster, checked to see the inputs;
5. the study's MLflow experiment and parent run, then its record (``study.json``);
6. Tune's experiment (``tuner``), run to its end; the study closed; its ablations written.

``vcr-study finals`` (``finals.py``) goes through the same steps with the finals' trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from study import cluster, inputs, reports, store, tracking
from study.launch import cost, preflight, tuner
from study.launch.console import captured
from study.search import SearchSpace, fail_orphans
from study.store import LaunchOptions
from vcrnet.errors import RunFailed, first_line
from vcrnet.features import FeatureChoice, FeatureSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def launch(
    options: LaunchOptions,
    resume: bool = False,
    choice: FeatureChoice = FeatureChoice(),
    verbose: bool = False,
) -> None:
    """Run (or resume) a study to its end. ``choice``: the feature options given (``inputs``
    resolves them; a resumed study keeps its own). The terminal shows the harness's lines; what
    the libraries print goes to the study's ``launch.log`` (and to the terminal too when
    ``verbose``). A new study refused before its record is written leaves no folder."""
    options, space, note = preflight.resolved_options(options, resume)
    address = preflight.check_store_and_cluster(options, resume)
    if address is None:  # a cluster's: once joined (_features)
        preflight.check_resources(options, None)
    made = [p for p in (store.home(), store.studies_root()) if not p.exists()]
    with store.running(options.name):
        try:
            _run(options, space, address, resume, choice, verbose, note)
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
    note: str | None = None,
) -> None:
    with captured(store.log_path(options.name), verbose) as shown:
        echo = shown.say
        echo(
            f"study {options.name}: {'resuming' if resume else 'starting'}; Ray, Tune, Optuna "
            f"and MLflow log to {shown.log}"
        )
        if note:
            echo(f"warning: {note}")
        if not resume:  # before features that may take hours to extract (a copy of the
            # options: resolving features records them, which the extraction below must do)
            planned = inputs.for_study(
                dataclasses.replace(options),
                ("train", "val"),
                choice,
                echo=lambda line: None,
                extract=False,
            )
            preflight.check_free_space(options, space, planned)
        with contextlib.redirect_stderr(shown.err):  # extraction's progress bar on the terminal
            found = features(options, choice, address, echo)  # trials only read them
        start_ray(address, found, options)
        client, parent = _open_study(options, space, found.settings, resume)
        tuned = tuner.build_or_restore(options, space, found, parent, resume, echo)
        status = tracking.KILLED  # unless the study runs to its end
        try:
            results = tuned.fit()
            _fail_orphaned_optuna_trials(options.name, echo)
            status = tracking.FINISHED
        finally:
            _close_study(client, parent, status, echo)
        try:  # a finished study stays finished whatever its report does
            written = reports.write_ablations(options, parent, client)
            echo(
                f"ablations: {store.reports_dir(options.name)}/ (also in the MLflow parent run)"
                if written
                else "ablations: no trial runs to report"
            )
        except Exception as error:  # noqa: BLE001
            echo(
                f"warning: ablations not written ({first_line(error)}); `vcr-study ablations "
                f"--name {options.name}` retries"
            )
        _check_some_trial_worked(options.name, results)


def dry_run(
    options: LaunchOptions,
    resume: bool = False,
    echo=print,
    choice: FeatureChoice = FeatureChoice(),
) -> cost.Plan:
    """Everything ``launch`` checks before it starts (space, options, name, tracking store,
    address, data, features cached or to extract, free space), and the study's plan, printed;
    no trial started, nothing written."""
    options, space, note = preflight.resolved_options(options, resume)
    address = preflight.check_store_and_cluster(options, resume)
    if address is None:  # as launch: before the features (a cluster's: once joined, below)
        preflight.check_resources(options, None)
    found = inputs.for_study(options, ("train", "val"), choice, echo=echo, extract=False)
    missing = [
        f"{split} {kind}" for split, entries in found.splits.items() for kind in entries.computed
    ]
    if address:
        cluster.join(address)
        preflight.check_resources(options, address)
        resources = preflight.cluster_resources()
    else:
        resources = preflight.local_resources()
    echo(
        f"study {options.name}: {'resume' if resume else 'new'}, space {space.name}, "
        f"tracking {tracking.redact(store.tracking_uri(options))}, "
        f"{'Ray cluster ' + address if address else 'a local Ray'} "
        f"({resources[0]:g} CPUs, {resources[1]:g} GPUs)"
    )
    if note:
        echo(f"warning: {note}")
    echo(
        f"features ({found.settings.describe()}): "
        + (
            f"to extract first ({', '.join(missing)}; not in the times below)"
            if missing
            else "cached"
        )
    )
    plan = preflight.study_plan(options, space, found, *resources)
    for line in plan.lines():
        echo(line)
    return plan


def features(
    options: LaunchOptions,
    choice: FeatureChoice,
    address: str | None,
    echo,
    splits: tuple[str, ...] = ("train", "val"),
) -> inputs.Features:
    """The trials' features of ``splits``; on a cluster, those missing extracted on its workers
    (joined first), a GPU each where its nodes have GPUs (``inputs.workers_for``)."""
    if not address:
        return inputs.for_study(options, splits, choice, echo=echo)
    cluster.join(address)
    preflight.check_resources(options, address)
    workers = inputs.workers_for(address, None, None, None)  # as the cluster's nodes allow
    return inputs.for_study(options, splits, choice, echo=echo, run=workers)


def start_ray(address: str | None, found: inputs.Features, options: LaunchOptions) -> None:
    """A local Ray (its old session folders pruned first); or, on the cluster at ``address``
    (joined), a check that its every node sees the trials' inputs and results."""
    if not address:
        from ray._common.utils import get_default_ray_temp_dir

        from study.launch.retention import prune_ray_sessions

        prune_ray_sessions(Path(options.ray_temp_dir or get_default_ray_temp_dir()))
        cluster.join(None, options.ray_temp_dir)
        return
    cluster.check_shared(
        {
            f"feature cache ({split})": Path(path)
            for split, paths in found.paths().items()
            for path in paths
        },
        store.storage_root(),
    )


def _open_study(
    options: LaunchOptions, space: SearchSpace, settings: FeatureSettings, resume: bool
) -> tuple[MlflowClient, str]:
    """The MLflow client and the study's parent run; a new study's record is saved once that run
    exists (so ``--resume`` always finds it), and its options are logged on it."""
    client = tracking.writing_client(store.tracking_uri(options))
    if resume:
        parent = store.load(options.name).parent_run_id
        store.save(store.StudyRecord(options, parent))  # the resources it now asks for
        tracking.reopen_study(client, parent)
        return client, parent
    parent = tracking.create_study(
        client,
        options.name,
        store.home(),
        store.artifacts_dir(options.name),
        space.description,
        space.varied(),
    )
    store.save(store.StudyRecord(options, parent))
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
    tracking.log_options(client, parent, params, space.path)
    return client, parent


def _check_some_trial_worked(name: str, results) -> None:
    """A study whose every trial failed is not done: one line with the first trial's error and
    where the rest is (``RunFailed``: exit code 1)."""
    failed = [r for r in results if r.error is not None]
    if not failed or len(failed) < len(results):
        return
    from ray.tune.result import EXPR_ERROR_FILE

    error_file = Path(failed[0].path) / EXPR_ERROR_FILE
    which = "its trial" if len(failed) == 1 else f"all {len(failed)} trials"
    raise RunFailed(
        f"study {name}: {which} failed: {tracking.error_line(str(error_file))[:300]} (the whole "
        f"error: {error_file})"
    )


def _fail_orphaned_optuna_trials(name: str, echo) -> None:
    journal = store.journal_path(name)
    if journal.is_file() and fail_orphans(str(journal), name):
        echo("marked the Optuna trials a driver restart left RUNNING as FAIL")


def _close_study(client: MlflowClient, parent: str, status: str, echo) -> None:
    left = tracking.close_study(client, parent, status)
    if left:
        echo(f"marked {left} trial run(s) left RUNNING as KILLED")
