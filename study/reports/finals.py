"""What the finals say: each approach's finalist over its seeds, the verdict between approaches,
and the test submission; read back from MLflow (the finals' runs and their predictions), so
``vcr-study verdict`` recomputes it at any time.

- **The finalist** of an approach: of its finals configurations (``--top``), the one with the
  best mean over its seeds of its own objective on dev (``TrainConfig.objective``); each seed
  read at its best epoch on that objective, as ``fit`` selected it. Its val (and, where test
  labels are known, test) readings: mean, standard deviation, 95% interval (Student's t).
- **The verdict** (``verdict.py``): every pair of finalists on val Q->AR, question by question
  from each seed's val predictions (``VAL_PREDICTIONS``), a paired bootstrap over questions and
  seeds, Holm over the pairs.
- **The submission**: the test predictions of the winning approach's best seed on dev, the
  winner being the finalist with the best mean dev Q->AR (the leaderboard's reading, the same
  for every approach). Nothing here is chosen on val or test.

An approach whose every finals run failed has no finalist: it is listed as failed and the rest
are still judged.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study import store, tracking
from study.reports.rerun import SUMMARY_METRICS, TEST_METRICS, t_interval
from study.reports.tables import write_table
from study.reports.verdict import Comparison, compare_all, write_verdict
from study.search import slug
from vcrnet.errors import InputError
from vcrnet.metrics import OBJECTIVE

READING = "val Q->AR"  # what the verdict compares (``val_q2ar``, question by question)
ENDED = (tracking.COMPLETED, tracking.STOPPED_EARLY)


@dataclass
class Finalist:
    """An approach's finalist configuration over its seeds (or, ``failed``, why it has none)."""

    approach: str
    method: str = ""
    of_trial: str = ""
    selected_on: str = OBJECTIVE
    seeds: list[int] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # the seeds' runs, in ``seeds``' order
    selected: list[float] = field(default_factory=list)  # each seed's best on ``selected_on``
    dev_q2ar: list[float] = field(default_factory=list)  # each seed's dev Q->AR at that epoch
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    interval: dict[str, float] = field(default_factory=dict)  # half-width, 95%
    failed: int = 0  # finals runs of the approach that failed or were killed
    note: str = ""


@dataclass
class FinalsReport:
    finalists: list[Finalist]
    pairs: list[Comparison]
    submission: Path | None = None
    submission_from: tuple[str, int, str] | None = None  # approach, seed, run id
    files: list[Path] = field(default_factory=list)
    running: int = 0  # finals runs not ended (a finals still going, or cut off)


def finalists(client, parent: str) -> tuple[list[Finalist], int]:
    """Each approach's finalist (best first by mean dev Q->AR; failed approaches last) from the
    study's finals runs, and how many runs have not ended."""
    runs = tracking.finals_runs(client, parent)
    if runs.empty:
        return [], 0
    running = int((~runs["final_status"].isin([*ENDED, tracking.FAILED, tracking.KILLED])).sum())
    found = []
    for approach, group in runs.groupby("label", sort=False):
        ended = group[group["final_status"].isin(ENDED)]
        failed = len(group) - len(ended)
        if ended.empty:
            found.append(
                Finalist(
                    approach,
                    method=str(group["method"].iloc[0]),
                    failed=failed,
                    note=f"all {len(group)} finals runs failed",
                )
            )
            continue
        configs = [_config_over_seeds(client, approach, c) for _, c in ended.groupby("finals_of")]
        best = max(configs, key=lambda f: statistics.fmean(f.selected))
        best.failed = failed
        found.append(best)
    found.sort(key=lambda f: (not f.seeds, -statistics.fmean(f.dev_q2ar) if f.seeds else 0))
    return found, running


def _config_over_seeds(client, approach: str, runs: pd.DataFrame) -> Finalist:
    runs = runs.sort_values("seed")
    objective = str(runs["params.objective"].iloc[0]) if "params.objective" in runs else OBJECTIVE
    at_best = [tracking.at_best_epoch(client, r, objective) for r in runs["run_id"]]
    keys = [k for k in (*SUMMARY_METRICS, *TEST_METRICS) if all(k in m for m in at_best)]
    n = len(at_best)
    mean = {k: statistics.fmean(m[k] for m in at_best) for k in keys}
    std = {k: statistics.stdev(m[k] for m in at_best) if n > 1 else math.nan for k in keys}
    return Finalist(
        approach=approach,
        method=str(runs["method"].iloc[0]),
        of_trial=str(runs["finals_of"].iloc[0]),
        selected_on=objective,
        seeds=[int(s) for s in runs["seed"]],
        runs=list(runs["run_id"]),
        selected=[m.get(objective, math.nan) for m in at_best],
        dev_q2ar=[m.get(OBJECTIVE, math.nan) for m in at_best],
        mean=mean,
        std=std,
        interval={k: t_interval(std[k], n) for k in keys},
        note="one seed: no interval" if n == 1 else "",
    )


def write_finals(name: str, echo: Callable[[str], None] = print) -> FinalsReport:
    """The finals' report of study ``name`` (``finals.csv``/``.md``, the verdict's files, the
    submission) under ``reports/<name>/``, logged to the study's parent run (``verdict/``)."""
    if store.load_finals(name) is None:
        raise InputError(
            f"--name {name}: it has no finals; `vcr-study finals --name {name}` runs them"
        )
    options = store.load(name).options
    client, parent = store.open_study(name)
    found, running = finalists(client, parent)
    out = store.reports_dir(name)
    judged = [f for f in found if f.seeds]
    uri = store.tracking_uri(options)
    val = _val_labels(options) if judged else None
    right = {f.approach: _right(uri, f, val, out) for f in judged}
    pairs = compare_all(right) if len(right) > 1 else []
    files = write_verdict(pairs, out, READING, len(right))
    files += write_table(finals_table(found), out / "finals", _finals_title(found, running))
    files += write_paper_tables(judged, options.data, out)
    report = FinalsReport(found, pairs, files=files, running=running)
    if judged:
        winner = judged[0]
        seed_at = max(range(len(winner.seeds)), key=lambda i: winner.selected[i])
        run_id = winner.runs[seed_at]
        target = out / f"submission-{slug(winner.approach)}.csv"
        got = tracking.download(
            uri,
            run_id,
            tracking.TEST_PREDICTIONS,
            out / "finals" / f"{run_id}-test.csv",
            f"finals run {run_id}",
        )
        shutil.copyfile(got, target)
        report.submission, report.submission_from = (
            target,
            (
                winner.approach,
                winner.seeds[seed_at],
                run_id,
            ),
        )
        files.append(target)
    writer = tracking.writing_client(uri)
    for path in files:
        writer.log_artifact(parent, str(path), artifact_path="verdict")
    return report


def _right(uri: str, finalist: Finalist, val, out: Path) -> np.ndarray:
    """``[seeds, questions]``: whether each seed's val prediction is right on Q->AR, the
    questions in the val split's order."""
    from vcrnet.leaderboard import per_question, read_csv, rows_for

    ids, labels = val  # ``_val_labels``
    rows = []
    for run_id in finalist.runs:
        path = tracking.download(
            uri,
            run_id,
            tracking.VAL_PREDICTIONS,
            out / "finals" / f"{run_id}-val.csv",
            f"finals run {run_id}",
        )
        got, answers, rationales = read_csv(path)
        order = rows_for(path, got, ids)
        right = per_question(answers[order], rationales[order], *labels)["q2ar"]
        rows.append(right.numpy().astype(np.float64))
    return np.stack(rows)


def _val_labels(options):
    """The val split's annot_ids and its ``(answer, rationale)`` label tensors, from the study's
    feature cache."""
    import torch

    from study import inputs
    from vcrnet.features import CachedVCRDataset

    found = inputs.for_study(options, ("val",), echo=lambda line: None, extract=False)
    val = CachedVCRDataset(found.splits["val"])
    labels = torch.from_numpy(np.asarray(val.labels, dtype=np.int64))
    return val.annot_ids, (labels[:, 0], labels[:, 1])


def finals_table(found: list[Finalist]) -> pd.DataFrame:
    """One row per approach: its finalist, seeds, what it was selected on, dev Q->AR and the
    val (and test) readings as mean, std and the 95% interval's half-width."""
    rows = []
    for f in found:
        row = {
            "approach": f.approach,
            "method": f.method,
            "finalist of trial": f.of_trial,
            "seeds": len(f.seeds),
            "failed runs": f.failed,
            "selected on": f.selected_on,
            "dev Q->AR": statistics.fmean(f.dev_q2ar) if f.seeds else math.nan,
        }
        for key in (*SUMMARY_METRICS, *TEST_METRICS):
            if key in f.mean:
                row[key] = f.mean[key]
                row[f"{key} std"] = f.std[key]
                row[f"{key} +-95%"] = f.interval[key]
        row["note"] = f.note
        rows.append(row)
    return pd.DataFrame(rows)


def write_paper_tables(found: list[Finalist], data: str | None, out: Path) -> list[Path]:
    """For a study with the ``paper`` space's rows: the paper's Tables 1, 2 and 4 filled from
    the finals (``finals_paper_table<N>``), each study number the finalist's mean over its seeds
    with the half-width of its 95% interval beside it, in %."""
    from study.reports.paper import comparable, paper_tables

    frame = pd.DataFrame(
        [
            {
                "label": f.approach,
                **f.mean,
                "objective": f.selected_on,
                "dev_selected": statistics.fmean(f.selected),
                "trial_id": f.of_trial,
            }
            for f in found
        ]
    )
    by_label = {f.approach: f for f in found}
    written = []
    for name, (title, table) in paper_tables(frame, comparable(data)).items():
        for reading, metric in (("Q->A", None), ("QA->R", "qa2r"), ("Q->AR", "q2ar")):
            column = f"{reading} study"
            half = []
            for _, row in table.iterrows():
                f = by_label.get(row["approach"])
                key = "val_q2a" if metric is None else _measured(row, metric)
                half.append(
                    round(100 * f.interval[key], 2) if f and key in f.interval else math.nan
                )
            table.insert(table.columns.get_loc(column) + 1, f"{reading} +-95%", half)
        table = table.rename(
            columns={c: c.replace("study", "finals") for c in table.columns if "study" in c}
        )
        title = (
            f"{title}, from the finals: each finalist's mean over its seeds, +- the half-width "
            "of its 95% interval (Student's t)"
        )
        written += write_table(table, out / f"finals_{name}", title)
    return written


def _measured(row: pd.Series, reading: str) -> str:
    """The study metric a paper row's QA->R or Q->AR was measured as."""
    from study.reports.paper import TABLES

    for _, rows in TABLES.values():
        for paper in rows:
            if paper.label == row["approach"]:
                return paper.qa2r_metric if reading == "qa2r" else paper.q2ar_metric
    return f"val_{reading}"


def _finals_title(found: list[Finalist], running: int) -> str:
    title = (
        "Each approach's finalist: its finals configuration with the best mean (over seeds) of "
        "its own dev objective; every seed read at its best epoch on dev. Val and test: mean, "
        "std and the half-width of the 95% interval of the mean (Student's t); nothing here "
        "was selected on val or test."
    )
    if running:
        title += f"\n\n{running} finals run(s) have not ended: `vcr-study finals --resume`."
    return title


def finals_summary(name: str) -> pd.DataFrame:
    """``finals_table`` of study ``name`` (empty without finals), for ``best`` and the API."""
    if store.load_finals(name) is None:
        return pd.DataFrame()
    client, parent = store.open_study(name)
    return finals_table(finalists(client, parent)[0])
