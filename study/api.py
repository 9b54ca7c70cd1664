"""The public surface of vcr-study for notebooks, scripts and the CLI: a study as pandas
DataFrames, and the few operations the CLI's commands call.

    from study import api
    api.studies()                    # the studies of this home ($VCR_STUDY_HOME)
    api.best("default1")             # the best trial per approach, ranked on dev_q2ar
    runs = api.trials("default1")    # a row per trial: params, best epoch, dev/val metrics there
    api.curves("default1", ["val_q2ar"]).pivot_table("value", "epoch", "trial_id").plot()
    model, config, _ = vcrnet.train.load_model(api.model_file(api.best("default1").model[0]))

The readers (``studies``, ``trials``, ``best``, ``curves``, ``model_file``) read (never write)
the tracking store named in the study's record (``study.store``), where ``study.tracking`` logged
it: a trial is a child run of the study's parent run, its metrics logged once per epoch (step =
epoch). An unknown study, or a store that is not there, is one line (``InputError``). Trials are
compared on ``OBJECTIVE`` (dev_q2ar, what the study selected on); ``best_epoch`` is the first
epoch at its highest value, and the dev_ and val_ columns are the metrics at that epoch (val is
reported, never selected on).

Importing this module loads pandas and the rooms' names, not MLflow, Ray or torch; each function
loads what it needs (``best`` reads the study's search space, which loads torch through
``vcrnet.config``).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from study import store, tracking
from vcrnet.errors import InputError
from vcrnet.metrics import OBJECTIVE, REPORTED

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

BEST = tracking.best_metric(OBJECTIVE)  # a trial's best dev Q->AR (the column: MLflow's metric)
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
CURVES = (OBJECTIVE, REPORTED, "train_loss")


def studies() -> pd.DataFrame:
    """Every study of this home, by name (what ``vcr-study studies`` lists): its state (running,
    finished, interrupted, failed, or "unknown (<why>)"), trial runs, best trial, bytes on disk."""
    rows = [
        (r.name, r.state, r.trials, *(r.best or (math.nan, None, None)), r.disk_bytes)
        for r in store.study_rows()
    ]
    return pd.DataFrame(rows, columns=STUDY_COLUMNS).astype({"trials": "Int64"})


def trials(name: str) -> pd.DataFrame:
    """One row per trial run of study ``name``, by trial id: its approach (a labelled grid row's
    name, else the method), MLflow status and the tracker's ``final_status`` (COMPLETED,
    STOPPED_EARLY, FAILED, KILLED, RUNNING), ``model`` (as ``best``'s), epochs run, its best
    epoch on dev_q2ar and every
    dev_/val_ metric there, then its params (numbers where every logged value is one).
    A trial that has reported nothing has NaN/<NA> there."""
    client, parent = store.open_study(name)
    runs = tracking.trial_runs(client, parent)
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
    rows = [
        {
            **_at_epoch(b["metrics"]),
            "final_status": b["status"],
            "config": b["config"],
            **{k: v for k, v in b.items() if k not in ("metrics", "config", "status")},
        }
        for b in best_rows(name)
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
    client, parent = store.open_study(name)
    runs = tracking.trial_runs(client, parent)
    frame = pd.DataFrame(tracking.metric_histories(client, runs, metrics), columns=CURVE_COLUMNS)
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
    folder = tracking.local_artifacts(run.info.artifact_uri)
    if folder is None:  # a server's: fetched once
        return tracking.download(uri, run_id, path, store.models_dir(run_id) / path, ref)
    if not (folder / path).is_file():
        raise InputError(f"{ref}: {folder / path} is not there")
    return folder / path  # on this disk: the file itself


def _find_run(ref: str, run_id: str, name: str | None):
    """``(tracking URI, run)`` of ``run_id``: in study ``name``'s store, else the first of
    ``_tracking_uris`` that has it (a server that does not answer is skipped)."""
    uris = [store.tracking_uri(store.load(name).options)] if name else _tracking_uris()
    for uri in uris:
        try:
            client = tracking.open_client(uri)
            if client is not None:
                return uri, client.get_run(run_id)
        except tracking.MlflowException:
            continue
        except InputError:  # a tracking server that does not answer
            if name:
                raise
    where = f"study {name}'s store" if name else f"{len(uris)} tracking store(s)"
    raise InputError(f"{ref}: no such run in {where}")


def _tracking_uris() -> list[str]:
    """``$MLFLOW_TRACKING_URI``, then the stores of this home's studies (each once)."""
    uris = [os.environ["MLFLOW_TRACKING_URI"]] if os.environ.get("MLFLOW_TRACKING_URI") else []
    for name in store.names():
        with contextlib.suppress(InputError):
            uris.append(store.tracking_uri(store.load(name).options))
    return list(dict.fromkeys(uris))


def best_rows(name: str) -> list[dict]:
    """The best trial of each approach of study ``name`` (``tracking.best_per_approach``), a row
    for every approach its space has (``no trial`` where none ran; all the space's approaches
    when its file is still there): what ``best --json`` prints and ``best`` tabulates."""
    from study.search import load_space

    client, parent = store.open_study(name)
    try:
        approaches = load_space(store.load(name).options.space).approaches()
    except InputError:  # the space file moved: the approaches that ran
        approaches = None
    return tracking.best_per_approach(client, parent, OBJECTIVE, approaches)


def checkpoint_path(ref: str) -> Path:
    """A checkpoint's path: ``ref`` itself where it is a file or not a run id / ``runs:/`` URI
    (``vcrnet.train.load_model`` then says what is wrong), else the run's logged weights."""
    if Path(ref).exists() or not tracking.is_model_ref(ref):
        return Path(ref)
    return model_file(ref)


def write_ablations(name: str) -> list[Path]:
    """Study ``name``'s ablations, written under ``reports/<name>/`` and logged to its parent
    run (``study.reports``); returns the files written (none: no trial runs yet)."""
    from study import reports

    client, parent = store.open_study(name)
    return reports.write_ablations(store.load(name).options, parent, client)


def study_links(uri: str, base: str) -> list[tuple[str, str]]:
    """``(name, link)`` of each study of this home logged to the store at ``uri``, into MLflow's
    UI served at ``base``; none where the store is not there yet."""
    client = tracking.open_client(uri)
    if client is None:
        return []
    studies = []
    for name in store.names():
        with contextlib.suppress(InputError):  # an old record: no link
            options, parent = store.load(name)
            if store.tracking_uri(options) == uri:
                studies.append((name, parent))
    return tracking.study_links(client, base, studies)


def _trial_row(client: MlflowClient, run: dict) -> dict:
    """A ``tracking.trial_runs`` row as a ``trials`` row (params keep their prefix here)."""
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
        **_at_epoch(tracking.at_best_epoch(client, run["run_id"], OBJECTIVE)),
        **params,
    }


def _at_epoch(metrics: dict[str, float]) -> dict:
    """The best epoch and its dev_/val_ metrics, from ``tracking.at_best_epoch``."""
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


# --- one model, no study (``vcr-study train``, ``predict``, ``evaluate``) ---------------------
def train(
    out: Path,
    values: dict,
    data: Path | None = None,
    cache: Path | None = None,
    choice=None,
    resume: bool = False,
    on_epoch=None,
    echo=print,
    device: str = "auto",
) -> list[dict]:
    """Train one TrainConfig (``values``: ``--set`` strings or values, checked) into ``out`` on
    the features the rule gives (a resumed run: those its checkpoint was trained on), on
    ``device`` (``vcrnet.device``: auto, cpu or cuda); returns the epochs' metrics.
    ``on_epoch(metrics, out)`` after each."""
    from study import inputs
    from vcrnet.config import TrainConfig
    from vcrnet.device import check_device, choose_device
    from vcrnet.features import CachedVCRDataset, FeatureChoice
    from vcrnet.train import CHECKPOINT, fit, load_checkpoint

    check_device(device)
    values, note = inputs.model_values(values, data is None)
    config = TrainConfig.from_dict(values, where="--set")
    choice = choice or FeatureChoice()
    splits = ("train", "val")
    if resume and (out / CHECKPOINT).is_file():  # go on with the features it was trained on
        saved = load_checkpoint(out / CHECKPOINT)
        found = inputs.from_checkpoint(out / CHECKPOINT, saved, data, cache, choice, splits, echo)
    else:
        found = inputs.resolve(data, cache, choice, splits, echo=echo)
    if note:
        warnings.warn(note, stacklevel=2)
    device, line = choose_device(device)
    echo(line)
    return fit(
        config,
        CachedVCRDataset(found.splits["train"]),
        CachedVCRDataset(found.splits["val"]),
        out,
        resume=resume,
        on_epoch=on_epoch,
        extra=found.extra(),
        device=device,
    )


def predict(
    ref: str,
    out: Path,
    split: str = "test",
    data: Path | None = None,
    cache: Path | None = None,
    choice=None,
    echo=print,
    device: str = "auto",
) -> tuple[int, Path]:
    """The leaderboard CSV of ``split`` at ``out`` from the checkpoint ``ref`` (a file, a run id
    or a ``runs:/`` URI), on the features it was trained on, computed on ``device`` (auto, cpu or
    cuda); returns (rows, path)."""
    from study import inputs
    from vcrnet.device import check_device, choose_device
    from vcrnet.features import CachedVCRDataset, FeatureChoice
    from vcrnet.leaderboard import write_csv
    from vcrnet.train import load_model
    from vcrnet.train import predict as predict_split

    check_device(device)
    _check_out_file(out)
    checkpoint = checkpoint_path(ref)
    model, _, saved = load_model(checkpoint)
    found = inputs.from_checkpoint(
        checkpoint, saved, data, cache, choice or FeatureChoice(), (split,), echo
    )
    dataset = CachedVCRDataset(found.splits[split])
    if dataset.text_dim != saved["text_dim"]:
        raise InputError(
            f"{checkpoint}: trained on {saved['text_dim']}-d text features, the "
            f"cached ones are {dataset.text_dim}-d: pass the checkpoint's feature "
            "options"
        )
    device, line = choose_device(device)
    echo(line)
    p = predict_split(model.to(device), dataset)
    return len(dataset), write_csv(out, dataset.annot_ids, p.answer_probs, p.rationale_probs)


def _check_out_file(out: Path) -> None:
    """``--out`` names a file that can be written: not a folder, in a folder (or where one can
    be made); checked before any work."""
    from vcrnet.atomic import check_writable

    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; give the CSV's file name")
    check_writable(out.absolute().parent, f"--out {out}")


def evaluate(predictions: Path, split: str = "val", data: Path | None = None) -> tuple[int, dict]:
    """A leaderboard CSV scored against ``split`` (the built-in data's test split too: its
    labels are kept beside test.jsonl); returns (items, metrics)."""
    from study import inputs
    from vcrnet.data import read_split
    from vcrnet.data.records import with_held_out_labels
    from vcrnet.leaderboard import score_csv

    root, _ = inputs.data_root(data, (split,), images=False)
    items = with_held_out_labels(root, split, read_split(root, split))
    if items and items[0].answer_label is None:
        raise InputError(f"--split {split}: has no labels to score against")
    return len(items), score_csv(predictions, items)


# --- a study (``vcr-study launch``, ``launch --dry-run``) ---------------------------------------
def launch(options, resume: bool = False, choice=None, verbose: bool = False) -> None:
    """Run (or resume) the study ``options`` describe to its end (``study.launch``)."""
    from study.launch import launch as run
    from vcrnet.features import FeatureChoice

    run(options, resume=resume, choice=choice or FeatureChoice(), verbose=verbose)


def finals(
    name: str,
    top: int = 1,
    seeds: int = 3,
    epochs: int | None = None,
    concurrent: int = 2,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    resume: bool = False,
    verbose: bool = False,
    address: str | None = None,
    method: str | None = None,
    run: str | None = None,
):
    """Study ``name``'s finals (``vcr-study finals``): each approach's ``top`` configurations
    re-trained with ``seeds`` new seeds as Ray Tune trials (``method``: only that approach's;
    ``run``: only the trial of that MLflow run), then the verdict; returns the
    ``reports.FinalsReport``. ``resume``: finish finals a killed driver left (the recorded
    options hold)."""
    from study.launch import run_finals
    from study.store import FinalsRecord

    asked = FinalsRecord(
        top, seeds, epochs, concurrent, cpus_per_trial, gpus_per_trial, method=method, run=run
    )
    return run_finals(name, asked, resume=resume, verbose=verbose, address=address)


def verdict(name: str):
    """Study ``name``'s finals read back from MLflow: the finalists, the pairwise verdict and
    the submission, their files rewritten under ``reports/<name>/`` (``vcr-study verdict``)."""
    from study.reports import write_finals

    return write_finals(name)


def finals_table(name: str) -> pd.DataFrame:
    """Each approach's finalist over its seeds (empty where the study has no finals): mean,
    std and 95% half-width of every val (and known test) reading."""
    from study.reports import finals_summary

    return finals_summary(name)


def dry_run(options, resume: bool = False, echo=print, choice=None):
    """What ``launch`` would check and what the study would cost, printed; nothing written."""
    from study.launch import dry_run as plan
    from vcrnet.features import FeatureChoice

    return plan(options, resume=resume, echo=echo, choice=choice or FeatureChoice())
