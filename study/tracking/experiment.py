"""The study's experiment and parent run in MLflow: made when a study starts (its name checked
free first, its runs table saved as the view a link opens on), its options logged, reopened on
``--resume``, closed when it ends, retired when it is deleted; links into the UI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from mlflow.entities import Param, ViewType
from mlflow.tracking import MlflowClient

from study.tracking.schema import (
    EXPERIMENT_KIND,
    FINAL_STATUS,
    FINISHED,
    KILLED,
    METHOD,
    NOTE,
    PARENT,
    PARENT_TAG,
    RUNNING,
    SHARED_VIEW_TAG,
    STUDY_EXPERIMENT,
    STUDY_ROLE,
    VIEW_KEY,
    best_metric,
)
from study.tracking.uris import is_local, redact
from vcrnet.errors import InputError
from vcrnet.metrics import OBJECTIVE, REPORTED

# the runs table's metric columns; the first ranks the trials
VIEW_METRICS = (best_metric(OBJECTIVE), REPORTED, "val_q2a", "val_qa2r", "epoch")


def create_study(
    client: MlflowClient,
    name: str,
    home: Path,
    artifacts: Path,
    description: str = "",
    params: Sequence[str] = (),
) -> str:
    """A new study's experiment and parent run; returns the run id (``check_name_free`` first).
    A local store keeps the study's artifacts in ``artifacts`` (``store.artifacts_dir``). The
    experiment gets the runs table a researcher looks for first (``share_view``), with
    ``params`` (the searched ones) as columns."""
    experiment = check_name_free(client, name, home)
    if experiment is None:
        # A local store keeps artifacts beside it; a tracking server keeps them where it was told
        # (`mlflow server --artifacts-destination`): the driver uploads them through the server.
        location = artifacts.absolute().as_uri() if is_local(client.tracking_uri) else None
        experiment_id = client.create_experiment(
            name, artifact_location=location, tags={**STUDY_EXPERIMENT, **EXPERIMENT_KIND}
        )
    else:  # created by a launch that died before its parent run: nothing to mix with
        experiment_id = experiment.experiment_id
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(experiment_id, key, value)
    share_view(client, experiment_id, params)
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={STUDY_ROLE: PARENT, NOTE: description},
    )
    return run.info.run_id


def share_view(client: MlflowClient, experiment_id: str, params: Sequence[str] = ()) -> None:
    """Save the runs table a study opens on as the experiment's shared view (what MLflow's
    "Share" button saves: the tag ``mlflow.sharedViewState.<key>``, read when a link carries
    ``viewStateShareKey=<key>``, as ``ui_url``'s does): trials ranked on their best
    ``dev_q2ar``, with their method, final status, validation metrics, epochs and ``params``
    as columns (by default MLflow shows none: run name, date, duration, source and models)."""
    columns = [
        *(f"tags.`{t}`" for t in (METHOD, FINAL_STATUS)),
        *(f"metrics.`{m}`" for m in VIEW_METRICS),
        *(f"params.`{p}`" for p in params),
    ]
    state = {
        "searchFilter": "",
        "orderByKey": f"metrics.`{VIEW_METRICS[0]}`",
        "orderByAsc": False,
        "selectedColumns": columns,
    }
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + VIEW_KEY, json.dumps(state))


def check_name_free(client: MlflowClient, name: str, home: Path):
    """The experiment of that name if it is empty (else None where there is none). A name the
    tracking store holds a study under (another home on a shared server, or a study whose folder
    was removed) is refused: the new study's trials would mix with that one's."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and (
        experiment.lifecycle_stage == "deleted"
        or client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1)
    ):
        raise InputError(
            f"--name {name}: the tracking store {redact(client.tracking_uri)} already has a "
            f"study of that name that {home} does not know; resume it from the home that "
            "launched it (--resume), choose another --name, or remove it with "
            f"`vcr-study delete --name {name}`"
        )
    return experiment


def ui_url(base: str, experiment_id: str, shared_view: bool = True) -> str:
    """A study's trial runs in MLflow's UI served at ``base`` (``http://127.0.0.1:5000``), in
    its model-training view (a fresh browser would open the GenAI overview), in the view
    ``share_view`` saved (``shared_view`` False: a study from before it has none)."""
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return url + (f"&viewStateShareKey={VIEW_KEY}" if shared_view else "")


def reopen_study(client: MlflowClient, parent_run_id: str) -> None:
    """A resumed study's own parent run (saved with the study), marked running again."""
    client.update_run(parent_run_id, status=RUNNING)


def close_study(client: MlflowClient, parent_run_id: str, status: str = FINISHED) -> int:
    """End the parent run; any trial run still RUNNING is marked KILLED. Returns how many."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    left = client.search_runs(
        [experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = '{RUNNING}'",
    )
    for run in left:
        client.set_tag(run.info.run_id, FINAL_STATUS, KILLED)
        client.set_terminated(run.info.run_id, KILLED)
    client.set_terminated(parent_run_id, status)
    return len(left)


def log_options(
    client: MlflowClient, parent: str, params: dict, space_file: Path | None = None
) -> None:
    """A new study's options as its parent run's params, and its space file as an artifact."""
    client.log_batch(parent, params=[Param(k, str(v)) for k, v in params.items()])
    if space_file is not None:
        client.log_artifact(parent, str(space_file))


def retire(client: MlflowClient, experiment) -> str:
    """Rename the experiment to a tombstone, then delete it (MLflow renames active ones only):
    MLflow keeps a deleted experiment's name until ``mlflow gc``. Returns the tombstone."""
    from mlflow.entities import LifecycleStage

    if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
        client.restore_experiment(experiment.experiment_id)
    base = f"{experiment.name}.deleted-{time.strftime('%Y%m%d-%H%M%S')}"
    tombstone, n = base, 1
    while client.get_experiment_by_name(tombstone) is not None:
        n += 1
        tombstone = f"{base}-{n}"
    client.rename_experiment(experiment.experiment_id, tombstone)
    client.delete_experiment(experiment.experiment_id)
    return tombstone


def study_links(
    client: MlflowClient, base: str, studies: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``(name, link)`` for each ``(name, parent run id)`` of ``studies`` in ``client``'s store: a
    link to its trial runs in MLflow's model-training view (a bare experiment link opens MLflow
    3's GenAI overview), ranked in the table ``share_view`` saved. A study whose run cannot be
    read there gets no link."""
    links = []
    for name, parent in studies:
        try:
            experiment = client.get_experiment(client.get_run(parent).info.experiment_id)
        except Exception:  # noqa: BLE001 - a run of another store, or gone: no link
            continue
        shared = SHARED_VIEW_TAG + VIEW_KEY in experiment.tags  # not in older studies
        links.append((name, ui_url(base, experiment.experiment_id, shared)))
    return links
