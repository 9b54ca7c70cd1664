"""All MLflow code: one experiment per study, a parent run for the study, one child run per trial.

Only the Ray Tune driver writes to MLflow (through :class:`MLflowTracker`, a Tune callback), so
concurrent trials never contend for the sqlite file. MLflow itself is the record of which run
belongs to which trial (the ``trial_id`` tag): after a trial retry or a driver restart the trial
finds its run again instead of opening a second one (the stock ``MLflowLoggerCallback`` keeps
that map in memory and duplicates runs), and an epoch already logged is never logged twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    RunStatus,
    RunTag,
    ViewType,
)
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from study.spaces import LABEL, slug, trial_values
from study.uris import RUN_ID, is_local, redact
from vcrnet.errors import InputError

PARENT_TAG = "mlflow.parentRunId"
# The experiment's kind as MLflow's UI writes it ("genai_development" is the other; the
# ExperimentKind enum of MLflow 3.17's JS bundle): model training. MLflow 3.17's UI itself picks
# its pages by its sidebar switch (the URL's ``workflowType``, else the browser's last choice,
# else GenAI): a link to a study carries the switch too (``ui_url``).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
METRIC_PREFIXES = ("train_", "dev_", "val_", "system/")  # system/: MLflow's system-metric names
METRIC_KEYS = ("lr", "tau", "epoch_seconds")  # besides the prefixed ones
# The runs table a study's link opens on (``share_view``): its first metric ranks the trials
SHARED_VIEW_TAG, VIEW_KEY = "mlflow.sharedViewState.", "vcr-study"
VIEW_METRICS = ("best_dev_q2ar", "val_q2ar", "val_q2a", "val_qa2r", "epoch")
MODEL_ARTIFACT = "model/best.pt"  # a trial's best epoch's weights (``vcrnet.train.BEST``)
MODEL_TAG = "best_model"  # on a trial run that has them: the artifact's path in the run
FINISHED, FAILED, KILLED = (
    RunStatus.to_string(s) for s in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)
)


def create_study(
    client: MlflowClient,
    name: str,
    home: Path,
    description: str = "",
    params: Sequence[str] = (),
) -> str:
    """A new study's experiment and parent run; returns the run id (``check_name_free`` first).
    The experiment gets the runs table a researcher looks for first (``share_view``), with
    ``params`` (the searched ones) as columns."""
    experiment = check_name_free(client, name, home)
    if experiment is None:
        # A local store keeps artifacts beside it; a tracking server keeps them where it was told
        # (`mlflow server --artifacts-destination`): the driver uploads them through the server.
        artifacts = (
            (home / "mlartifacts" / name).absolute().as_uri()
            if is_local(client.tracking_uri)
            else None
        )
        experiment_id = client.create_experiment(
            name, artifact_location=artifacts, tags={"vcr_study": "1", **EXPERIMENT_KIND}
        )
    else:  # created by a launch that died before its parent run: nothing to mix with
        experiment_id = experiment.experiment_id
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(experiment_id, key, value)
    share_view(client, experiment_id, params)
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={"study_role": "parent", "mlflow.note.content": description},
    )
    return run.info.run_id


def share_view(client: MlflowClient, experiment_id: str, params: Sequence[str] = ()) -> None:
    """Save the runs table a study opens on as the experiment's shared view (what MLflow's
    "Share" button saves: the tag ``mlflow.sharedViewState.<key>``, read when a link carries
    ``viewStateShareKey=<key>``, as ``ui_url``'s does): trials ranked on their best
    ``dev_q2ar``, with their method, final status, validation metrics, epochs and ``params``
    as columns (by default MLflow shows none: run name, date, duration, source and models)."""
    columns = [
        *(f"tags.`{t}`" for t in ("method", "final_status")),
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
    client.update_run(parent_run_id, status="RUNNING")


def close_study(client: MlflowClient, parent_run_id: str, status: str = FINISHED) -> int:
    """End the parent run; any trial run still RUNNING is marked KILLED. Returns how many."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    left = client.search_runs(
        [experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    for run in left:
        client.set_tag(run.info.run_id, "final_status", "KILLED")
        client.set_terminated(run.info.run_id, KILLED)
    client.set_terminated(parent_run_id, status)
    return len(left)


def trial_metrics(result: dict) -> dict[str, float]:
    """The per-epoch metrics of a Tune result (not Ray's own bookkeeping)."""
    return {
        k: float(v)
        for k, v in result.items()
        if (k.startswith(METRIC_PREFIXES) or k in METRIC_KEYS)
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    }


class MLflowTracker(Callback):
    """A Tune callback (driver side) that logs each trial as a child run of the study.

    ``flat_params(config) -> dict`` turns a trial's Tune config into the params to log (the
    resolved TrainConfig, method included). ``inputs``: the feature cache entries every trial
    reads, ``{split: (text entry, objects entry)}`` (``Features.paths()``), logged as each trial
    run's dataset inputs.
    """

    def __init__(
        self,
        tracking_uri: str,
        parent_run_id: str,
        flat_params,
        metric: str,
        inputs: dict[str, tuple[str, str]] | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.flat_params = flat_params
        self.metric = metric
        self.inputs = dict(inputs or {})
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id (a cache of what MLflow says)
        self._last_epoch: dict[str, int] = {}
        self._best: dict[str, float] = {}
        self._node: dict[str, str] = {}  # trial id -> the Ray node it last reported from

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
            self.experiment_id = self._client.get_run(self.parent_run_id).info.experiment_id
        return self._client

    def __getstate__(self) -> dict:  # Tune saves callbacks with the experiment: no live client
        return {**self.__dict__, "_client": None}

    # --- Tune hooks ---------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run_of(trial)

    def on_trial_restore(self, iteration, trials, trial, **info) -> None:
        self._run_of(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self._run_of(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self._last_epoch.get(trial.trial_id, 0):
            return  # already logged (a retried trial re-reports from its checkpoint)
        metrics = trial_metrics(result)
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value):
            self._best[trial.trial_id] = max(self._best.get(trial.trial_id, -math.inf), value)
            metrics[f"best_{self.metric}"] = self._best[trial.trial_id]
        metrics["epoch"] = epoch
        node = result.get("node_id")
        if node and self._node.get(trial.trial_id) != node:  # where it trains (a retry may move)
            self._node[trial.trial_id] = node
            self.client.set_tag(run_id, "node_id", node)
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(k, v, now, epoch) for k, v in metrics.items()]
        )
        self._last_epoch[trial.trial_id] = epoch

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_of(trial)
        retries = int(self.client.get_run(run_id).data.tags.get("retries", "0")) + 1
        self.client.set_tag(run_id, "retries", str(retries))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_of(trial)
        epochs = int(self.flat_params(trial.config)["epochs"])
        done = self._last_epoch.get(trial.trial_id, 0)
        self.client.set_tag(
            run_id, "final_status", "STOPPED_EARLY" if epochs and done < epochs else "COMPLETED"
        )
        self.client.set_terminated(run_id, FINISHED)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_of(trial)
        reason = _error_line(getattr(trial, "error_file", None))
        self.client.log_batch(
            run_id, tags=[RunTag("final_status", "FAILED"), RunTag("error", reason[:500])]
        )
        self.client.set_terminated(run_id, FAILED)

    def on_experiment_end(self, trials, **info) -> None:
        """Each approach's best trial, as ``vcr-study best`` ranks them, gets its best epoch's
        weights logged to its run (``MODEL_ARTIFACT``), from the checkpoint ``CheckpointPruner``
        held for it; so does an interrupted study's, from the trials ended so far."""
        from study.results import best_per_method  # here: study.results imports this module

        ended = {t.trial_id: t for t in trials if t.status in (Trial.TERMINATED, Trial.ERROR)}
        for row in best_per_method(self.client, self.parent_run_id, self.metric):
            trial = ended.get(row["trial_id"])
            if trial is not None and not row["model"]:
                log_best_model(self.client, row["run_id"], Path(trial.path))

    # --- the one run per trial ----------------------------------------------------------------
    def _run_of(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        client = self.client
        found = client.search_runs(
            [self.experiment_id],
            f"tags.trial_id = '{trial.trial_id}' and tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
            max_results=1,
        )
        if found:  # a restart or a retry: the same run, marked running again
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            history = client.get_metric_history(run_id, "epoch")
            self._last_epoch[trial.trial_id] = int(max((m.step for m in history), default=0))
            best = found[0].data.metrics.get(f"best_{self.metric}")
            if best is not None:
                self._best[trial.trial_id] = best
        else:
            params = self.flat_params(trial.config)
            label = trial_values(trial.config).get(LABEL)  # a labelled grid row's name
            tags = {
                PARENT_TAG: self.parent_run_id,
                "trial_id": trial.trial_id,
                "method": params["method"],
                "final_status": "RUNNING",
                **({LABEL: label} if label else {}),
            }
            run = client.create_run(
                self.experiment_id,
                tags=tags,
                run_name=f"{slug(label or params['method'])}-{trial.trial_id}",
            )
            run_id = run.info.run_id
            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
            client.log_dict(run_id, params, "config.json")
            if self.inputs:
                client.log_inputs(run_id, datasets=feature_inputs(self.inputs))
            self._last_epoch[trial.trial_id] = 0
        self._runs[trial.trial_id] = run_id
        return run_id


def log_best_model(client: MlflowClient, run_id: str, trial_folder: Path) -> None:
    """Log the best weights in the trial's latest Tune checkpoint (``trial_folder``) to its run
    as ``MODEL_ARTIFACT`` and tag the run ``MODEL_TAG``; nothing where none is there (a trial
    that reported no epoch)."""
    found = sorted(trial_folder.glob(f"checkpoint_*/{Path(MODEL_ARTIFACT).name}"))
    if found:
        client.log_artifact(run_id, str(found[-1]), str(Path(MODEL_ARTIFACT).parent))
        client.set_tag(run_id, MODEL_TAG, MODEL_ARTIFACT)


def parse_model_ref(ref: str) -> tuple[str, str]:
    """``(run id, artifact path)`` of a run id (its ``MODEL_ARTIFACT``) or a ``runs:/`` URI;
    anything else is an ``InputError``."""
    if RUN_ID.fullmatch(ref):
        return ref, MODEL_ARTIFACT
    run_id, _, path = ref.removeprefix("runs:/").partition("/")
    if not ref.startswith("runs:/") or not RUN_ID.fullmatch(run_id) or not path:
        raise InputError(f"{ref}: not a run id or a runs:/<run id>/<path> URI")
    return run_id, path


def model_uri(run_id: str) -> str:
    """Where a trial run's best weights are, as MLflow names artifacts: ``runs:/<id>/<path>``
    (``vcr-study predict --checkpoint`` takes it)."""
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"


def feature_inputs(paths: dict[str, tuple[str, str]]) -> list[DatasetInput]:
    """The feature cache entries of ``{split: (text entry, objects entry)}`` as MLflow dataset
    inputs: named ``<split>-<kind>``, digested by the entry's settings fingerprint (its folder is
    ``<split>-<kind>-<fingerprint>``, ``vcrnet.features.cache.entry_dir``), sourced at its path,
    in the split's context."""
    inputs = []
    for split, entries in paths.items():
        for kind, entry in zip(("text", "objects"), entries, strict=True):
            folder = Path(entry).name
            dataset = Dataset(
                name=f"{split}-{kind}",
                digest=folder.rsplit("-", 1)[-1],
                source_type="local",
                source=str(entry),
            )
            inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", split)]))
    return inputs


def _error_line(error_file: str | None) -> str:
    """The exception's own line: the last non-empty line of the trial's error file (its
    traceback comes first)."""
    if not error_file or not Path(error_file).is_file():
        return "the trial raised an error"
    lines = [ln for ln in Path(error_file).read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "the trial raised an error"
