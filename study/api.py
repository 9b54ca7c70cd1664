"""A study as pandas DataFrames, for notebooks (and for the CLI's ``best`` and ``studies``).

    from study import api
    api.studies()                    # the studies of this home ($VCR_STUDY_HOME)
    api.best("default1")             # the best trial per approach, ranked on dev_q2ar
    runs = api.trials("default1")    # a row per trial: params, best epoch, dev/val metrics there
    api.curves("default1", ["val_q2ar"]).pivot_table("value", "epoch", "trial_id").plot()
    model, config, _ = vcrnet.train.load_model(api.model_file(api.best("default1").model[0]))

Each function reads (never writes) the tracking store named in the study's record
(``study.store``), where ``study.tracking`` logged it: a trial is a child run of the study's
parent run, its metrics logged once per epoch (step = epoch). An unknown study, or a store that
is not there, is one line (``InputError``). Trials are compared on ``OBJECTIVE`` (dev_q2ar, what
the study selected on); ``best_epoch`` is the first epoch at its highest value, and the dev_ and
val_ columns are the metrics at that epoch (val is reported, never selected on).

Importing this module costs what ``study`` costs: torch (through ``study.builtin``), MLflow, and
``ray.tune`` (``study.results`` -> ``study.tracking``), some 10 s on a small machine.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from study import builtin, manage, results, store, tracking
from study.spaces import load_space
from study.uris import local_artifacts, redact
from vcrnet.atomic import replacing
from vcrnet.errors import InputError
from vcrnet.train import OBJECTIVE

BEST = f"best_{OBJECTIVE}"
TRIAL_COLUMNS = [
    "trial_id",
    "approach",
    "method",
    "run_id",
    "status",
    "final_status",
    "model",
    "epochs_run",
    BEST,
    "best_epoch",
]  # then dev_*, val_* at best_epoch; params
BEST_COLUMNS = [
    "approach",
    "method",
    "trial_id",
    "run_id",
    "model",
    "final_status",
    "trials",
    OBJECTIVE,
    "best_epoch",
]  # then dev_*, val_* at best_epoch; config (a dict of the params)
CURVE_COLUMNS = ["trial_id", "approach", "method", "epoch", "metric", "value"]
STUDY_COLUMNS = ["name", "state", "trials", BEST, "best_approach", "best_method", "disk_bytes"]
CURVES = (OBJECTIVE, "val_q2ar", "train_loss")


def studies() -> pd.DataFrame:
    """Every study of this home, by name (what ``vcr-study studies`` lists): its state (running,
    finished, interrupted, failed, or "unknown (<why>)"), trial runs, best trial, bytes on disk."""
    rows = [
        (r.name, r.state, r.trials, *(r.best or (math.nan, None, None)), r.disk_bytes)
        for r in manage.study_rows()
    ]
    return pd.DataFrame(rows, columns=STUDY_COLUMNS).astype({"trials": "Int64"})


def trials(name: str) -> pd.DataFrame:
    """One row per trial run of study ``name``, by trial id: its approach (a labelled grid row's
    name, else the method), MLflow status and the tracker's ``final_status`` (COMPLETED,
    STOPPED_EARLY, FAILED, KILLED, RUNNING), ``model`` (as ``best``'s), epochs run, its best
    epoch on dev_q2ar and every
    dev_/val_ metric there, then its params (numbers where every logged value is one).
    A trial that has reported nothing has NaN/<NA> there."""
    client, parent = _open(name)
    runs = results.trial_runs(client, parent)
    rows = [_trial_row(client, run) for run in runs.to_dict("records")]
    frame = _params_as_columns(pd.DataFrame(rows, columns=None if rows else TRIAL_COLUMNS))
    return frame.astype({"epochs_run": "Int64", "best_epoch": "Int64"}).sort_values(
        "trial_id", ignore_index=True
    )


def best(name: str) -> pd.DataFrame:
    """The best trial of each approach of study ``name`` (what ``vcr-study best`` prints), one
    row each, ranked on dev_q2ar (highest first): its trial count, best epoch and every dev_/val_
    metric there, ``model`` (the ``runs:/`` URI of its logged best weights once the study has
    ended, else ""; ``model_file`` fetches them) and ``config``, its params as a dict."""
    client, parent = _open(name)
    rows = [
        {
            **_at_epoch(b["metrics"]),
            "final_status": b["status"],
            "config": b["config"],
            **{k: v for k, v in b.items() if k not in ("metrics", "config", "status")},
        }
        for b in best_per_approach(name, client, parent)
    ]
    frame = pd.DataFrame(rows, columns=None if rows else [*BEST_COLUMNS, "config"])
    return frame[[*BEST_COLUMNS, *frame.columns.drop([*BEST_COLUMNS])]].astype(
        {"best_epoch": "Int64"}
    )


def curves(name: str, metrics: Sequence[str] = CURVES) -> pd.DataFrame:
    """The per-epoch histories of ``metrics`` of every trial of study ``name``, long format: a
    row per (trial_id, approach, method, epoch, metric, value), sorted by trial, metric, epoch
    (a curve a run of rows). One MLflow query per trial and metric; a metric a trial never
    logged has no rows."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    client, parent = _open(name)
    runs = results.trial_runs(client, parent)
    rows = [
        (run["trial_id"], run["label"], run["method"], point.step, key, point.value)
        for run in runs.to_dict("records")
        for key in metrics
        for point in client.get_metric_history(run["run_id"], key)
    ]
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return frame.sort_values(["trial_id", "metric", "epoch"], ignore_index=True)


def model_file(ref: str, name: str | None = None) -> Path:
    """A local path to a trial run's logged best weights (``vcrnet.train.load_model`` reads it;
    a study logs each approach's best trial's when it ends: ``best``'s ``model`` column).
    ``ref``: a run id or ``runs:/<run id>/<artifact path>``; looked up in study ``name``'s
    tracking store, else in ``$MLFLOW_TRACKING_URI``'s and every store this home's studies use.
    Artifacts on this disk are returned where they lie; a server's are downloaded under the
    home's ``models/<run id>/``."""
    run_id, path = tracking.parse_model_ref(ref)
    uri, run = _find_run(ref, run_id, name)
    if path == tracking.MODEL_ARTIFACT and tracking.MODEL_TAG not in run.data.tags:
        raise InputError(
            f"{ref}: run {run_id} has no logged weights (a study logs its approaches' best "
            "trials' when it ends: vcr-study best lists them)"
        )
    folder = local_artifacts(run.info.artifact_uri)
    if folder is None:
        return _fetched(ref, uri, run_id, path)
    if not (folder / path).is_file():
        raise InputError(f"{ref}: {folder / path} is not there")
    return folder / path  # on this disk: the file itself


def _find_run(ref: str, run_id: str, name: str | None):
    """``(tracking URI, run)`` of ``run_id``: in study ``name``'s store, else the first of
    ``_tracking_uris`` that has it (a server that does not answer is skipped)."""
    from mlflow.exceptions import MlflowException

    uris = [store.tracking_uri(store.load(name).options)] if name else _tracking_uris()
    for uri in uris:
        try:
            client = manage._open(uri)
            if client is not None:
                return uri, client.get_run(run_id)
        except MlflowException:
            continue
        except InputError:  # a tracking server that does not answer
            if name:
                raise
    where = f"study {name}'s store" if name else f"{len(uris)} tracking store(s)"
    raise InputError(f"{ref}: no such run in {where}")


def _fetched(ref: str, uri: str, run_id: str, path: str) -> Path:
    """A server's artifact, downloaded once (whole or not at all) to ``models/<run id>/``."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    target = builtin.home() / "models" / run_id / path
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with replacing(target) as tmp, tempfile.TemporaryDirectory(dir=target.parent) as d:
                got = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=path, tracking_uri=uri, dst_path=d
                )
                os.replace(got, tmp)
        except (MlflowException, OSError) as err:
            raise InputError(f"{ref}: {str(err).splitlines()[0]}") from None
    return target


def _tracking_uris() -> list[str]:
    """``$MLFLOW_TRACKING_URI``, then the stores of this home's studies (each once)."""
    uris = [os.environ["MLFLOW_TRACKING_URI"]] if os.environ.get("MLFLOW_TRACKING_URI") else []
    for name in store.names():
        with contextlib.suppress(InputError):
            uris.append(store.tracking_uri(store.load(name).options))
    return list(dict.fromkeys(uris))


def best_per_approach(name: str, client: MlflowClient, parent: str) -> list[dict]:
    """``results.best_per_method`` of study ``name``, with a row for every approach its space
    has (``no trial`` where none ran; all the space's approaches when its file is still there)."""
    try:
        approaches = results.approaches(load_space(store.load(name).options.space))
    except InputError:  # the space file moved: the approaches that ran
        approaches = None
    return results.best_per_method(client, parent, OBJECTIVE, approaches)


def _open(name: str) -> tuple[MlflowClient, str]:
    """Study ``name``'s tracking store (as it is: a missing sqlite file is not created) and
    parent run id."""
    options, parent = store.load(name)
    uri = store.tracking_uri(options)
    client = manage._open(uri)  # manage's check: reading never creates a store
    if client is None:
        raise InputError(f"--name {name}: its tracking store {redact(uri)} is not there")
    return client, parent


def _trial_row(client: MlflowClient, run: dict) -> dict:
    """A ``results.trial_runs`` row as a ``trials`` row (params keep their prefix here)."""
    params = {k: v for k, v in run.items() if k.startswith("params.") and isinstance(v, str)}
    return {
        "trial_id": run["trial_id"],
        "approach": run["label"],
        "method": run["method"],
        "run_id": run["run_id"],
        "status": run["status"],
        "final_status": run["final_status"],
        "model": run["model"],
        "epochs_run": run.get("metrics.epoch", math.nan),
        BEST: run.get(f"metrics.{BEST}", math.nan),
        **_at_epoch(results.at_best_epoch(client, run["run_id"], OBJECTIVE)),
        **params,
    }


def _at_epoch(metrics: dict[str, float]) -> dict:
    """The best epoch and its dev_/val_ metrics, from ``results.at_best_epoch``."""
    return {
        "best_epoch": metrics.get("epoch", math.nan),
        **{k: metrics[k] for k in sorted(metrics) if k.startswith(("dev_", "val_"))},
    }


def _params_as_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``params.*`` columns renamed to the params' names, as numbers where they are (a param
    that repeats a column, ``method``, is dropped)."""
    params = {c: c.removeprefix("params.") for c in frame.columns if c.startswith("params.")}
    for column in params:
        frame[column] = _typed(frame[column])
    return frame.drop(columns=[c for c, p in params.items() if p in frame]).rename(columns=params)


def _typed(column: pd.Series) -> pd.Series:
    """A params column as numbers where every logged value is one or None (MLflow keeps strings;
    None, e.g. ``hidden`` left to its preset, becomes NaN)."""
    try:
        return pd.to_numeric(column.replace("None", math.nan))
    except (ValueError, TypeError):
        return column
