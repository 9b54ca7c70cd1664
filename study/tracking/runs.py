"""Reading a study back from MLflow: its trial runs, each trial's metrics at its best epoch, the
best trial per approach (the one ranking every reader uses), metric histories, artifacts.

Imports MLflow and pandas, not Ray or torch: the commands that only read a study start fast.
``MlflowException`` is MLflow's error, for the rooms that read through this one.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from study.tracking.schema import (
    FINAL_STATUS,
    FINALS,
    FINALS_OF,
    FINALS_OF_RUN,
    LABEL,
    METHOD,
    MODEL_TAG,
    PARENT_TAG,
    SEED,
    STAGE,
    TRIAL_ID,
    best_metric,
    model_uri,
)
from vcrnet.atomic import replacing
from vcrnet.errors import InputError, first_line


def trial_runs(client: MlflowClient, parent_run_id: str) -> pd.DataFrame:
    """One row per search trial run: run id, method, label (a labelled grid row's name, else the
    method), labelled (whether it is a grid row's name), trial id, status, final status, model
    (``runs:/`` URI of its logged best weights, or ""), params and the last value of every
    metric (``metrics.*``, ``params.*`` columns, as ``mlflow.search_runs``)."""
    return pd.DataFrame(
        [
            _row(run)
            for run in child_runs(client, parent_run_id)
            if TRIAL_ID in run.data.tags and STAGE not in run.data.tags  # not a rerun's, finals'
        ]
    )


def finals_runs(client: MlflowClient, parent_run_id: str) -> pd.DataFrame:
    """One row per finals run (``schema``: a seed of a finalist), as ``trial_runs``' rows with
    its seed, the search trial it re-trains (``finals_of``) and that trial's run
    (``finals_of_run``)."""
    return pd.DataFrame(
        [
            {
                **_row(run),
                "seed": int(run.data.tags.get(SEED, "-1")),
                "finals_of": run.data.tags.get(FINALS_OF, ""),
                "finals_of_run": run.data.tags.get(FINALS_OF_RUN, ""),
            }
            for run in child_runs(client, parent_run_id)
            if run.data.tags.get(STAGE) == FINALS
        ]
    )


def child_runs(client: MlflowClient, parent_run_id: str):
    """Every child run of the study's parent run, page by page."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            break


def _row(run) -> dict:
    tags = run.data.tags
    return {
        "run_id": run.info.run_id,
        "method": tags.get(METHOD),
        "label": tags.get(LABEL) or tags.get(METHOD),
        "labelled": LABEL in tags,
        "trial_id": tags.get(TRIAL_ID),
        "status": run.info.status,
        "final_status": tags.get(FINAL_STATUS),
        "model": model_uri(run.info.run_id) if MODEL_TAG in tags else "",
        **{f"params.{k}": v for k, v in run.data.params.items()},
        **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
    }


def at_best_epoch(client: MlflowClient, run_id: str, metric: str) -> dict[str, float]:
    """Every metric of a run at the epoch where ``metric`` was highest (the first such epoch)."""
    history = client.get_metric_history(run_id, metric)
    if not history:
        return {}
    best = max(history, key=lambda m: (m.value, -m.step)).step
    out = {}
    for key in client.get_run(run_id).data.metrics:
        values = [m.value for m in client.get_metric_history(run_id, key) if m.step == best]
        if values and not math.isnan(values[-1]):
            out[key] = values[-1]
    return out


def best_of_each(frame: pd.DataFrame, column: str, by: str = "label") -> pd.DataFrame:
    """The ranking of "the best trial per approach", the one every reader uses: of each ``by``
    group (an approach: a method, or a labelled grid row), the row with the highest ``column``
    (the first such row on a tie), highest first; rows where ``column`` is NaN take no part.
    ``best_per_approach`` ranks trial runs by their best epoch's metric with it, the catalog
    takes its first row as a study's best, the ablations rank their trials table with it."""
    if frame.empty or column not in frame:
        return frame.iloc[0:0]
    scored = frame[frame[column].notna()]
    best = scored.loc[scored.groupby(by)[column].idxmax()]
    return best.sort_values(column, ascending=False, kind="stable")


def best_per_approach(
    client: MlflowClient, parent_run_id: str, metric: str, approaches: list[str] | None = None
) -> list[dict]:
    """The best trial of each approach by its best epoch's ``metric`` (highest first). An
    approach is a method, or a labelled grid row (R2C and the new baseline are both ``teacher``
    trials, told apart by their labels; ``best_of_each``). ``approaches``
    (``SearchSpace.approaches()``): each one
    without a trial that has ``metric`` gets a row after them, ``metric`` NaN, status
    ``no trial`` (or ``no result``: its trials failed or were NaN throughout)."""
    runs = trial_runs(client, parent_run_id)
    column = f"metrics.{best_metric(metric)}"
    counts = runs[runs[column].notna()]["label"].value_counts() if column in runs else {}
    best = [
        {**_summary(client, row, metric), "trials": int(counts[row["label"]])}
        for _, row in best_of_each(runs, column).iterrows()
    ]
    found = {b["approach"] for b in best}
    for approach in approaches or []:
        if approach not in found:
            tried = int((runs["label"] == approach).sum()) if not runs.empty else 0
            best.append(
                {
                    "approach": approach,
                    "method": approach,
                    "trial_id": "",
                    "run_id": "",
                    "status": "no result" if tried else "no trial",
                    "trials": tried,
                    "model": "",
                    metric: math.nan,
                    "metrics": {},
                    "config": {},
                }
            )
    return best


def top_per_approach(client: MlflowClient, parent_run_id: str, metric: str, top: int) -> list[dict]:
    """Each approach's ``top`` best search trials by their best epoch's ``metric`` (highest
    first; ties in run order, as ``best_of_each``), as ``best_per_approach`` rows with their
    ``rank`` (1 = the approach's best): the finalists. Trials without ``metric`` take no part."""
    runs = trial_runs(client, parent_run_id)
    column = f"metrics.{best_metric(metric)}"
    if runs.empty or column not in runs:
        return []
    scored = runs[runs[column].notna()]
    rows = []
    for _, group in scored.groupby("label", sort=False):
        ranked = group.sort_values(column, ascending=False, kind="stable").head(top)
        for rank, (_, row) in enumerate(ranked.iterrows(), 1):
            rows.append({**_summary(client, row, metric), "rank": rank, "trials": len(group)})
    return sorted(rows, key=lambda r: (-r[metric], r["rank"]))


def trial_of_run(client: MlflowClient, parent_run_id: str, run_id: str, metric: str) -> dict:
    """The trial of run ``run_id`` as a ``best_per_approach`` row (``trials`` 1), for a run of
    the study whose parent run is ``parent_run_id``; anything else is an ``InputError``."""
    runs = trial_runs(client, parent_run_id)
    found = runs[runs["run_id"] == run_id] if not runs.empty else runs
    if found.empty:
        raise InputError(f"--run {run_id}: not a trial run of this study")
    return {**_summary(client, found.iloc[0], metric), "trials": 1}


def _summary(client: MlflowClient, row: pd.Series, metric: str) -> dict:
    """A ``trial_runs`` row as ``best_per_approach`` gives it: its metrics at its best epoch, its
    params as ``config``."""
    return {
        "approach": row["label"],
        "method": row["method"],
        "trial_id": row["trial_id"],
        "run_id": row["run_id"],
        "status": row["final_status"],
        "model": row["model"],
        metric: float(row.get(f"metrics.{best_metric(metric)}", math.nan)),
        "metrics": at_best_epoch(client, row["run_id"], metric),
        "config": {
            k.removeprefix("params."): v
            for k, v in row.items()
            if k.startswith("params.") and isinstance(v, str)
        },
    }


def metric_histories(
    client: MlflowClient, runs: pd.DataFrame, metrics: Sequence[str]
) -> list[tuple[str, str, str, int, str, float]]:
    """``(trial_id, label, method, epoch, metric, value)`` for every point of ``metrics`` of
    every run of ``runs`` (``trial_runs``): one MLflow query per run and metric."""
    return [
        (run["trial_id"], run["label"], run["method"], point.step, key, point.value)
        for run in runs.to_dict("records")
        for key in metrics
        for point in client.get_metric_history(run["run_id"], key)
    ]


def download(uri: str, run_id: str, path: str, target: Path, ref: str) -> Path:
    """The artifact ``path`` of run ``run_id`` in the store at ``uri``, downloaded once (whole or
    not at all) to ``target``; a failure is one line naming ``ref``."""
    import mlflow.artifacts

    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with replacing(target) as tmp, tempfile.TemporaryDirectory(dir=target.parent) as d:
                got = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=path, tracking_uri=uri, dst_path=d
                )
                os.replace(got, tmp)
        except (MlflowException, OSError) as err:
            raise InputError(f"{ref}: {first_line(err)}") from None
    return target


def log_report(client: MlflowClient, parent_run_id: str, files: Sequence[Path]) -> None:
    """A study's report files as artifacts of its parent run, under ``ablations/``."""
    for path in files:
        client.log_artifact(parent_run_id, str(path), artifact_path="ablations")
