"""Each trial a child run of its study's parent run, written by the Ray Tune driver alone.

Only the driver writes to MLflow (through :class:`MLflowTracker`, a Tune callback), so
concurrent trials never contend for the sqlite file. MLflow itself is the record of which run
belongs to which trial (the ``trial_id`` tag): after a trial retry or a driver restart the trial
finds its run again instead of opening a second one (the stock ``MLflowLoggerCallback`` keeps
that map in memory and duplicates runs), and an epoch already logged is never logged twice.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    RunTag,
)
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from study.search import LABEL as SPACE_LABEL
from study.search import TrialConfigs, slug, trial_values
from study.tracking.runs import best_per_approach
from study.tracking.schema import (
    COMPLETED,
    DATA_CONTEXT,
    ERROR,
    FAILED,
    FINAL_STATUS,
    FINISHED,
    LABEL,
    METHOD,
    MODEL_ARTIFACT,
    MODEL_TAG,
    NODE_ID,
    PARENT_TAG,
    RETRIES,
    RUNNING,
    STOPPED_EARLY,
    TRIAL_ID,
    best_metric,
    trial_metrics,
)


class MLflowTracker(Callback):
    """A Tune callback (driver side) that logs each trial as a child run of the study.

    ``configs.params(tune_config)`` resolves a trial's Tune config into its TrainConfig as a dict,
    logged as the run's params (method and epochs included; ``TrialConfigs``). ``inputs``: the
    feature cache entries every trial reads, ``{split: (text entry, objects entry)}``
    (``Features.paths()``), logged as each trial run's dataset inputs.
    """

    def __init__(
        self,
        tracking_uri: str,
        parent_run_id: str,
        configs: TrialConfigs,
        metric: str,
        inputs: dict[str, tuple[str, str]] | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.configs = configs
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
            metrics[best_metric(self.metric)] = self._best[trial.trial_id]
        metrics["epoch"] = epoch
        node = result.get("node_id")
        if node and self._node.get(trial.trial_id) != node:  # where it trains (a retry may move)
            self._node[trial.trial_id] = node
            self.client.set_tag(run_id, NODE_ID, node)
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(k, v, now, epoch) for k, v in metrics.items()]
        )
        self._last_epoch[trial.trial_id] = epoch

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_of(trial)
        retries = int(self.client.get_run(run_id).data.tags.get(RETRIES, "0")) + 1
        self.client.set_tag(run_id, RETRIES, str(retries))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_of(trial)
        epochs = int(self.configs.params(trial.config)["epochs"])
        done = self._last_epoch.get(trial.trial_id, 0)
        self.client.set_tag(
            run_id, FINAL_STATUS, STOPPED_EARLY if epochs and done < epochs else COMPLETED
        )
        self.client.set_terminated(run_id, FINISHED)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_of(trial)
        reason = error_line(getattr(trial, "error_file", None))
        self.client.log_batch(
            run_id, tags=[RunTag(FINAL_STATUS, FAILED), RunTag(ERROR, reason[:500])]
        )
        self.client.set_terminated(run_id, FAILED)

    def on_experiment_end(self, trials, **info) -> None:
        """Each approach's best trial, as ``vcr-study best`` ranks them, gets its best epoch's
        weights logged to its run (``MODEL_ARTIFACT``), from the checkpoint ``CheckpointPruner``
        held for it; so does an interrupted study's, from the trials ended so far."""
        self.close_ended(trials)
        ended = {t.trial_id: t for t in trials if t.status in (Trial.TERMINATED, Trial.ERROR)}
        for row in best_per_approach(self.client, self.parent_run_id, self.metric):
            trial = ended.get(row["trial_id"])
            if trial is not None and not row["model"]:
                log_best_model(self.client, row["run_id"], Path(trial.path))

    def close_ended(self, trials) -> None:
        """Close the run of every trial Tune holds as ended whose run is still open: a driver
        killed after Tune saved a trial as TERMINATED, before this callback closed its run (the
        restored trial never completes again)."""
        for trial in trials:
            if trial.status == Trial.TERMINATED and self._open(trial):
                self.on_trial_complete(0, trials, trial)

    # --- the one run per trial ----------------------------------------------------------------
    def _open(self, trial) -> bool:
        """Whether the trial's run exists and has not ended (read, not reopened)."""
        found = self._find(trial)
        return bool(found) and found[0].info.status == RUNNING

    def _find(self, trial) -> list:
        """The trial's run in MLflow (MLflow is the record of which run is which trial)."""
        return self.client.search_runs(
            [self.experiment_id],
            f"tags.{TRIAL_ID} = '{trial.trial_id}' and tags.`{PARENT_TAG}` = "
            f"'{self.parent_run_id}'",
            max_results=1,
        )

    def _run_of(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        client = self.client
        found = self._find(trial)
        if found:  # a restart or a retry: the same run, marked running again
            run_id = found[0].info.run_id
            client.update_run(run_id, status=RUNNING)
            history = client.get_metric_history(run_id, "epoch")
            self._last_epoch[trial.trial_id] = int(max((m.step for m in history), default=0))
            best = found[0].data.metrics.get(best_metric(self.metric))
            if best is not None:
                self._best[trial.trial_id] = best
        else:
            params = self.configs.params(trial.config)
            tags, run_name = self.identity(trial, params)
            tags = {
                PARENT_TAG: self.parent_run_id,
                TRIAL_ID: trial.trial_id,
                METHOD: params["method"],
                FINAL_STATUS: RUNNING,
                **tags,
            }
            run = client.create_run(self.experiment_id, tags=tags, run_name=run_name)
            run_id = run.info.run_id
            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
            client.log_dict(run_id, params, "config.json")
            if self.inputs:
                client.log_inputs(run_id, datasets=feature_inputs(self.inputs))
            self._last_epoch[trial.trial_id] = 0
        self._runs[trial.trial_id] = run_id
        return run_id

    def identity(self, trial, params: dict) -> tuple[dict[str, str], str]:
        """A new run's own tags (besides parent, trial id, method and status) and its name: a
        labelled grid row's ``LABEL``; named ``<label or method>-<trial id>``."""
        label = trial_values(trial.config).get(SPACE_LABEL)  # a labelled grid row's name
        name = f"{slug(label or params['method'])}-{trial.trial_id}"
        return ({LABEL: label} if label else {}), name


def log_best_model(client: MlflowClient, run_id: str, trial_folder: Path) -> None:
    """Log the best weights in the trial's latest Tune checkpoint (``trial_folder``) to its run
    as ``MODEL_ARTIFACT`` and tag the run ``MODEL_TAG``; nothing where none is there (a trial
    that reported no epoch)."""
    found = sorted(trial_folder.glob(f"checkpoint_*/{Path(MODEL_ARTIFACT).name}"))
    if found:
        client.log_artifact(run_id, str(found[-1]), str(Path(MODEL_ARTIFACT).parent))
        client.set_tag(run_id, MODEL_TAG, MODEL_ARTIFACT)


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
            inputs.append(DatasetInput(dataset, tags=[InputTag(DATA_CONTEXT, split)]))
    return inputs


def error_line(error_file: str | None) -> str:
    """The exception's own line: the last non-empty line of a trial's error file (Ray writes the
    traceback first)."""
    if not error_file or not Path(error_file).is_file():
        return "the trial raised an error"
    lines = [ln for ln in Path(error_file).read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "the trial raised an error"
