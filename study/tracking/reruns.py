"""A rerun's seeds as runs of the study: one child run of the parent per seed, tagged with the
trial it re-runs, its epochs' metrics logged as a trial's are, the submission CSV on the best."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from study.tracking.schema import (
    COMPLETED,
    FINAL_STATUS,
    FINISHED,
    METHOD,
    PARENT_TAG,
    RERUN_OF,
    RERUN_OF_RUN,
    RUNNING,
    SEED,
    trial_metrics,
)


def start_seed_run(
    client: MlflowClient, parent_run_id: str, trial: dict, seed: int, params: dict, name: str
) -> str:
    """A new run for seed ``seed`` of ``trial`` (a ``best_per_approach`` row), its ``params`` (the
    seed's TrainConfig) logged; returns its id."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    tags = {
        PARENT_TAG: parent_run_id,
        METHOD: params["method"],
        SEED: str(seed),
        RERUN_OF: trial["trial_id"],
        RERUN_OF_RUN: trial["run_id"],
        FINAL_STATUS: RUNNING,
    }
    run = client.create_run(experiment_id, run_name=f"rerun-{name}-seed{seed}", tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def log_metrics(client: MlflowClient, run_id: str, metrics: dict, step: int) -> None:
    """The epoch metrics of ``metrics`` (as a trial logs them) at ``step``."""
    now = int(time.time() * 1000)
    client.log_batch(
        run_id, metrics=[Metric(k, v, now, step) for k, v in trial_metrics(metrics).items()]
    )


def finish_seed_run(client: MlflowClient, run_id: str) -> None:
    client.set_tag(run_id, FINAL_STATUS, COMPLETED)
    client.set_terminated(run_id, FINISHED)


def log_submission(client: MlflowClient, run_id: str, csv: Path) -> None:
    client.log_artifact(run_id, str(csv))
