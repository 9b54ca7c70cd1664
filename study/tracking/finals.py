"""The finals' runs: each seed of a finalist a child run of the study, logged by the Tune driver
as a search trial is (``MLflowTracker``: one run per trial, found again after a restart, every
epoch once), tagged as finals (``schema``), and at its end given its best epoch's weights and
its val and test predictions (leaderboard CSVs) from the trial's last checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from study.search import slug, trial_values
from study.tracking.schema import (
    FINALS,
    FINALS_OF,
    FINALS_OF_RUN,
    LABEL,
    MODEL_ARTIFACT,
    MODEL_TAG,
    SEED,
    STAGE,
    TEST_PREDICTIONS,
    TEST_SCORES,
    VAL_PREDICTIONS,
)
from study.tracking.trials import MLflowTracker

PREDICTIONS = Path(VAL_PREDICTIONS).parent.name  # the folder a checkpoint keeps them in


class FinalsTracker(MLflowTracker):
    """``MLflowTracker`` for the finals' trials (``study.search.FinalConfigs``). Where the trial
    scored test (its labels known: the built-in data keeps them beside test.jsonl), its test
    readings are logged as ``test_*`` at its best epoch."""

    def identity(self, trial, params: dict) -> tuple[dict[str, str], str]:
        entry = trial_values(trial.config)
        tags = {
            STAGE: FINALS,
            LABEL: entry["approach"],
            FINALS_OF: entry["of_trial"],
            FINALS_OF_RUN: entry["of_run"],
            SEED: str(entry["seed"]),
        }
        name = f"final-{slug(entry['approach'])}-{entry['rank']}-seed{entry['seed']}"
        return tags, name

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_of(trial)
        self._outputs(run_id, trial)  # before COMPLETED
        super().on_trial_complete(iteration, trials, trial, **info)

    def _outputs(self, run_id: str, trial) -> None:
        log_outputs(self.client, run_id, Path(trial.path))
        objective = self.configs.config(trial.config).objective
        log_test_scores(self.client, run_id, Path(trial.path), objective)

    def on_experiment_end(self, trials, **info) -> None:
        """The runs of trials that ended while no driver closed them, closed with their outputs
        (``close_ended``); no best weights to pick: every finals run has its own."""
        self.close_ended(trials)


def log_outputs(client: MlflowClient, run_id: str, trial_folder: Path) -> None:
    """The best weights and the predictions in the trial's last Tune checkpoint, logged to its
    run (``MODEL_ARTIFACT``, ``VAL_PREDICTIONS``, ``TEST_PREDICTIONS``); ``MODEL_TAG`` set last,
    so a run that has it has them all."""
    found = sorted(trial_folder.glob("checkpoint_*"))
    if not found:
        return
    last = found[-1]
    for artifact in (VAL_PREDICTIONS, TEST_PREDICTIONS):
        path = last / artifact
        if path.is_file():
            client.log_artifact(run_id, str(path), PREDICTIONS)
    weights = last / Path(MODEL_ARTIFACT).name
    if weights.is_file():
        client.log_artifact(run_id, str(weights), str(Path(MODEL_ARTIFACT).parent))
        client.set_tag(run_id, MODEL_TAG, MODEL_ARTIFACT)


def log_test_scores(client: MlflowClient, run_id: str, trial_folder: Path, objective: str) -> None:
    """The test readings the trial wrote beside its predictions (``TEST_SCORES``), logged at the
    run's best epoch on ``objective``; nothing where it wrote none (test labels unknown)."""
    found = sorted(trial_folder.glob(f"checkpoint_*/{TEST_SCORES}"))
    history = client.get_metric_history(run_id, objective)
    if not found or not history:
        return
    scores = json.loads(found[-1].read_text())
    step = max(history, key=lambda m: (m.value, -m.step)).step
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in scores.items()])
