"""Reading a study back from MLflow: its trial runs, the best trial per method."""

from __future__ import annotations

import math

import pandas as pd
from mlflow.tracking import MlflowClient

from study.spaces import SearchSpace
from study.tracking import MODEL_TAG, PARENT_TAG, model_uri
from vcrnet.errors import InputError


def trial_runs(client: MlflowClient, parent_run_id: str) -> pd.DataFrame:
    """One row per trial run: run id, method, label (a labelled grid row's name, else the
    method), labelled (whether it is a grid row's name), trial id, status, final status, model
    (``runs:/`` URI of its logged best weights, or ""), params and the last value of every
    metric (``metrics.*``, ``params.*`` columns, as ``mlflow.search_runs``)."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    rows = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            if "trial_id" not in tags:  # a rerun's run, not a trial's
                continue
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "method": tags.get("method"),
                    "label": tags.get("label") or tags.get("method"),
                    "labelled": "label" in tags,
                    "trial_id": tags.get("trial_id"),
                    "status": run.info.status,
                    "final_status": tags.get("final_status"),
                    "model": model_uri(run.info.run_id) if MODEL_TAG in tags else "",
                    **{f"params.{k}": v for k, v in run.data.params.items()},
                    **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
                }
            )
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


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


def best_per_method(
    client: MlflowClient, parent_run_id: str, metric: str, approaches: list[str] | None = None
) -> list[dict]:
    """The best trial of each approach by its best epoch's ``metric`` (highest first). An
    approach is a method, or a labelled grid row (R2C and the new baseline are both ``teacher``
    trials, told apart by their labels). ``approaches`` (``approaches(space)``): each one
    without a trial that has ``metric`` gets a row after them, ``metric`` NaN, status
    ``no trial`` (or ``no result``: its trials failed or were NaN throughout)."""
    runs = trial_runs(client, parent_run_id)
    column = f"metrics.best_{metric}"
    best = []
    if not runs.empty and column in runs:
        for _, group in runs[runs[column].notna()].groupby("label"):
            best.append(
                {
                    **_summary(client, group.loc[group[column].idxmax()], metric),
                    "trials": len(group),
                }
            )
    best.sort(key=lambda b: -b[metric])
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


def trial_of_run(client: MlflowClient, parent_run_id: str, run_id: str, metric: str) -> dict:
    """The trial of run ``run_id`` as a ``best_per_method`` row (``trials`` 1), for a run of
    the study whose parent run is ``parent_run_id``; anything else is an ``InputError``."""
    runs = trial_runs(client, parent_run_id)
    found = runs[runs["run_id"] == run_id] if not runs.empty else runs
    if found.empty:
        raise InputError(f"--run {run_id}: not a trial run of this study")
    return {**_summary(client, found.iloc[0], metric), "trials": 1}


def _summary(client: MlflowClient, row: pd.Series, metric: str) -> dict:
    """A ``trial_runs`` row as ``best_per_method`` gives it: its metrics at its best epoch, its
    params as ``config``."""
    return {
        "approach": row["label"],
        "method": row["method"],
        "trial_id": row["trial_id"],
        "run_id": row["run_id"],
        "status": row["final_status"],
        "model": row["model"],
        metric: float(row.get(f"metrics.best_{metric}", math.nan)),
        "metrics": at_best_epoch(client, row["run_id"], metric),
        "config": {
            k.removeprefix("params."): v
            for k, v in row.items()
            if k.startswith("params.") and isinstance(v, str)
        },
    }


def approaches(space: SearchSpace) -> list[str]:
    """What ``best`` gives a row each: a grid's row labels (a row without one named by its
    method), else the coupling methods the space can draw (``SearchSpace.methods``)."""
    if space.is_grid:
        return list(dict.fromkeys(space.labels()))
    return space.methods()
