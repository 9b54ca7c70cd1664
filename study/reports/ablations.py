"""``vcr-study ablations``: a study's tables and plots, like the seed paper's.

Everything is read back from MLflow (and the Optuna journal, for which settings each method
draws), written under ``reports/<name>/`` (CSV + Markdown tables, PNG + interactive HTML plots)
and logged to the study's parent run:

- ``trials``: one row per trial; in Markdown, a setting only under the methods that use it
  (``-`` elsewhere) and the settings every trial shares in one line above the table;
- ``best_per_method``: the best trial of each approach (a method, or a labelled grid row) at its
  best epoch on dev (what it selected on), with its validation numbers (never selected on); every
  approach of the space, ``no trial`` where none ran;
- ``paper_table1``, ``paper_table2``, ``paper_table4``: for a study of ``paper.yaml``, the seed
  paper's Tables 1, 2 and 4 in its layout, its numbers beside the study's (``paper.py``);
- ``loss_ratio``: Q->AR against the rationale:answer loss ratio, softmax and Gumbel (Table 4);
- ``gumbel_schedule``, ``rl_samples``, ``baseline_rate``: Q->AR against each method's own setting;
- ``learning_curves``: validation Q->AR per epoch, every trial, coloured by method;
- ``importances``: fANOVA parameter importances (Optuna's), with a note where the trials are too
  few for them to mean anything; ``parallel_coordinates``: every trial's settings and Q->AR.

Trials are compared at equal budgets. ASHA stops most trials after the grace period, so a trial's
best value mixes 1-epoch and full-length runs; the setting plots, the importances and the parallel
coordinates read validation Q->AR *at the compared epochs* instead: the epochs at which trials
stopped (ASHA's rungs; the first is one every trial reached) and the last epoch, each trial
compared only with trials at the same epoch. Trials stopped early are drawn with a cross.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from study import store
from study.reports import paper
from study.reports.figures import (
    curves_figure,
    curves_html,
    save_figure,
    settings_figure,
    settings_html,
)
from study.reports.importance import write_importances
from study.reports.tables import at_epoch, markdown_table, values_at, write_table
from study.search import SearchSpace, load_space
from study.store import LaunchOptions
from study.tracking import STOPPED_EARLY, best_of_each, log_report, trial_runs
from vcrnet.errors import InputError
from vcrnet.metrics import OBJECTIVE, REPORTED

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TABLE1_COLUMNS = {
    "val_q2a": "Q->A",
    "val_qa2r": "QA->R (gold answer)",
    "val_qa2r_pred": "QA->R (predicted answer)",
    "val_q2ar": "Q->AR",
}
# every metric the tables read at a trial's best epoch (the paper's rows read their own decoding)
CURVE_METRICS = tuple(
    dict.fromkeys(
        [
            OBJECTIVE,
            *TABLE1_COLUMNS,
            *(
                m
                for _, rows in paper.TABLES.values()
                for r in rows
                for m in (r.qa2r_metric, r.q2ar_metric)
            ),
        ]
    )
)
SETTINGS = {  # plot name -> (methods, the params it shows)
    "loss_ratio": (("softmax", "gumbel"), ("loss_ratio",)),
    "gumbel_schedule": (("gumbel",), ("tau_start", "tau_end", "anneal_epochs")),
    "rl_samples": (("reinforce",), ("num_samples",)),
    "baseline_rate": (("teacher",), ("correct_answer_rate",)),
}
NOT_USED = "-"  # a Markdown cell: the trial's method does not use that setting
LOG_SCALE = ("loss_ratio", "lr", "num_samples")  # log axes where the space does not say
MAX_COMPARED = 3  # compared epochs at most: the first, the last and one rung between
# a trial's objective (TrainConfig.objective, the dev decoding its LR schedule, stopping and best
# epoch followed) and its value at the best epoch: what tables rank approaches by
SELECTED_ON, SELECTED = "objective", "dev_selected"


def write_ablations(options: LaunchOptions, parent: str, client: MlflowClient) -> list[Path]:
    """Study ``options.name``'s ablation tables and plots under ``reports/<name>/``, also logged
    to its parent run; returns the files written (none: no trial runs yet)."""
    try:
        space = load_space(options.space)
    except InputError:  # the space file moved since: the approaches and settings that ran
        space = None
    return build_report(
        client,
        parent,
        store.reports_dir(options.name),
        store.journal_path(options.name),
        options.name,
        comparable=paper.comparable(options.data),
        approaches=space.approaches() if space else None,
        space=space,
    )


def build_report(
    client: MlflowClient,
    parent_run_id: str,
    out: Path,
    optuna_journal: Path | None = None,
    study_name: str = "",
    comparable: bool = False,
    approaches: list[str] | None = None,
    space: SearchSpace | None = None,
) -> list[Path]:
    """Write every table and plot to ``out``; returns the files written. ``comparable``: the
    study ran on VCR 1.0 val, so the paper's numbers can stand beside its own. ``approaches``:
    the space's methods or grid labels, every one a row of ``best_per_method`` (``no trial``
    where none ran). ``space``: which settings each method uses (its params' ``methods:``);
    without it, the Optuna journal's trials say (a grid's: every setting applies)."""
    runs = trial_runs(client, parent_run_id)
    if runs.empty:
        return []
    curves = learning_curves(client, runs)
    if curves.empty or OBJECTIVE not in curves or curves[OBJECTIVE].isna().all():
        ended = runs["final_status"].fillna("RUNNING").value_counts()
        raise InputError(
            f"{study_name or 'the study'}: none of its trials reported a result ("
            + ", ".join(f"{n} {status}" for status, n in ended.items())
            + "): no ablations to write; each failed trial's run in MLflow has its error as the "
            "tag `error` (vcr-study ui)"
        )
    out.mkdir(parents=True, exist_ok=True)
    journal = _journal_study(optuna_journal, study_name)
    uses = settings_used(space, journal)
    trials = _trial_table(runs, curves, uses)
    epochs = compared_epochs(trials)
    log_params = _log_params(space, journal)
    written = write_table(trials, out / "trials", markdown=trials_markdown(trials, uses))
    written += write_table(table1(trials, approaches), out / "best_per_method")
    labelled = trials[trials["labelled"]]  # the paper's rows are labelled grid rows, by name
    for name, (title, table) in paper.paper_tables(
        best_of_each(labelled, SELECTED), comparable
    ).items():
        written += write_table(table, out / name, title)
    for name, (methods, params) in SETTINGS.items():
        subset = trials[trials["method"].isin(methods)]
        present = [p for p in params if p in subset and subset[p].nunique() > 0]
        cols = [p for p in present if subset[p].nunique() > 1] or present[:1]  # what varies
        if subset.empty or not cols:
            continue
        table = settings_table(subset, cols, curves, epochs)
        written += write_table(table, out / name, _equal_epochs_caption(epochs))
        written += save_figure(settings_figure(table, cols, epochs, log_params, name), out / name)
        written += settings_html(table, cols, epochs, out / name)
    if not curves.empty:
        written += save_figure(curves_figure(curves, trials), out / "learning_curves")
        written += curves_html(curves, out / "learning_curves")
    common = [p for p in _searched(trials, uses) if uses.get(p) is None]  # every method's
    if common:
        written += write_importances(trials, curves, epochs, common, log_params, out)
    if (out / "plotly.min.js").is_file():  # what the HTML pages load
        written.append(out / "plotly.min.js")
    log_report(client, parent_run_id, written)
    return written


# --- reading the study back ---------------------------------------------------------------------
def learning_curves(client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: trial_id, method, epoch and every validation metric at that epoch."""
    rows = []
    for run in runs.to_dict("records"):
        per_epoch: dict[int, dict] = {}
        for key in dict.fromkeys([*CURVE_METRICS, _objective(run)]):  # and the trial's own
            for m in client.get_metric_history(run["run_id"], key):
                per_epoch.setdefault(m.step, {})[key] = m.value
        rows += [
            {"trial_id": run["trial_id"], "method": run["method"], "epoch": step, **values}
            for step, values in sorted(per_epoch.items())
        ]
    return pd.DataFrame(rows)


def settings_used(space: SearchSpace | None, journal=None) -> dict[str, frozenset[str] | None]:
    """Setting -> the methods that use it (None: every method). From the space's params'
    ``methods:``; else from the Optuna trials (define-by-run draws only what applies); a
    setting named by neither applies to every method."""
    if space is not None and space.params:
        return {n: frozenset(p.methods) if p.methods else None for n, p in space.params.items()}
    if journal is None:
        return {}
    drawn: dict[str, set[str]] = {}
    for trial in journal.trials:
        method = trial.params.get("method")
        for name in trial.params if method is not None else ():
            drawn.setdefault(name, set()).add(method)
    every = set().union(*drawn.values()) if drawn else set()
    return {n: None if methods == every else frozenset(methods) for n, methods in drawn.items()}


def compared_epochs(trials: pd.DataFrame) -> list[int]:
    """The epochs trials are compared at: each epoch where a trial stopped early (ASHA's rungs;
    the first of them every trial reached) and the last epoch run, at most ``MAX_COMPARED``."""
    ran = trials.loc[trials["epochs_run"] > 0, "epochs_run"]
    if ran.empty:
        return []
    stopped = trials.loc[
        (trials["final_status"] == STOPPED_EARLY) & (trials["epochs_run"] > 0), "epochs_run"
    ]
    epochs = sorted({int(ran.min()), *map(int, stopped), int(ran.max())})
    if len(epochs) > MAX_COMPARED:
        epochs = [epochs[0], epochs[len(epochs) // 2], epochs[-1]]
    return epochs


def _trial_table(
    runs: pd.DataFrame, curves: pd.DataFrame, uses: dict[str, frozenset[str] | None]
) -> pd.DataFrame:
    """One row per trial: its params (numbers where they are numbers; empty where its method
    does not use them), whether it was stopped early, and its best epoch."""
    rows = []
    for run in runs.to_dict("records"):
        row = {
            "trial_id": run["trial_id"],
            "label": run["label"],
            "labelled": run["labelled"],
            "method": run["method"],
            "final_status": run["final_status"],
            "stopped_early": run["final_status"] == STOPPED_EARLY,
        }
        row.update(
            {
                k.removeprefix("params."): _number(v)
                for k, v in run.items()
                if k.startswith("params.")
            }
        )
        for name, methods in uses.items():
            if methods is not None and run["method"] not in methods and name in row:
                row[name] = None
        mine = curves[curves["trial_id"] == run["trial_id"]] if not curves.empty else curves
        objective = row[SELECTED_ON] = _objective(run)  # the trial's own, as fit selected
        if not mine.empty and objective in mine and mine[objective].notna().any():
            at_best = mine.loc[mine[objective].idxmax()]  # chosen on dev, reported on val
            row["best_epoch"] = int(at_best["epoch"])
            row["epochs_run"] = int(mine["epoch"].max())
            row.update({k: at_best.get(k) for k in CURVE_METRICS})
            row[SELECTED] = at_best[objective]
        else:
            row.update({"best_epoch": None, "epochs_run": 0, **dict.fromkeys(CURVE_METRICS)})
            row[SELECTED] = None
        rows.append(row)
    return pd.DataFrame(rows)


def _objective(run: dict) -> str:
    """The dev decoding a trial's training selected on (its ``objective`` param; runs logged
    before rows could choose one: ``OBJECTIVE``)."""
    value = run.get("params.objective")
    return value if isinstance(value, str) and value else OBJECTIVE


def _number(value: object) -> object:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in str(value) else number


def _journal_study(journal: Path | None, study_name: str):
    if journal is None or not journal.is_file():
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no study of that name in the journal
        return None


def _log_params(space: SearchSpace | None, journal) -> set[str]:
    """The settings drawn on a log scale: the space's, else the journal's, else ``LOG_SCALE``."""
    if space is not None and space.params:
        return {n for n, p in space.params.items() if p.log}
    if journal is not None and journal.trials:
        dists = {n: d for t in journal.trials for n, d in t.distributions.items()}
        return {n for n, d in dists.items() if getattr(d, "log", False)}
    return set(LOG_SCALE)


def _searched(trials: pd.DataFrame, uses: dict) -> list[str]:
    """The settings that vary between trials (the method first), common ones before a
    method's own."""
    skip = {
        "trial_id",
        "label",
        "labelled",
        "final_status",
        "stopped_early",
        "best_epoch",
        "epochs_run",
        "seed",
        SELECTED,
        *CURVE_METRICS,
    }
    varying = [
        c
        for c in trials.columns
        if c not in skip
        and (trials[c].nunique() > 1 or uses.get(c) is not None and trials[c].notna().any())
    ]
    return sorted(varying, key=lambda c: (c != "method", uses.get(c) is not None))


# --- tables -------------------------------------------------------------------------------------
def table1(trials: pd.DataFrame, approaches: list[str] | None = None) -> pd.DataFrame:
    """The best trial of each approach (by the dev decoding its rows selected on), at its best
    epoch, every method's QA->R readings, sorted by that dev value (what was selected on, never
    val); an approach of ``approaches`` with no scored trial is a row of its own (``no trial``,
    or ``no result`` where its trials ran but none scored: failed, or NaN throughout)."""
    best = best_of_each(trials, SELECTED)
    columns = ["label", "method", "trial_id", "best_epoch", "epochs_run", SELECTED_ON, SELECTED]
    table = best[[*columns, *TABLE1_COLUMNS]].rename(
        columns={
            "label": "approach",
            "epochs_run": "epochs run",
            SELECTED_ON: "selected on",
            SELECTED: "dev (selected on)",
            **TABLE1_COLUMNS,
        }
    )
    missing = [a for a in approaches or [] if a not in set(table["approach"])]
    if missing:
        ran = set(trials["label"]) if "label" in trials else set()
        marks = ["no result" if a in ran else "no trial" for a in missing]
        table = pd.concat([table, pd.DataFrame({"approach": missing, "trial_id": marks})])
    return table.reset_index(drop=True)


def trials_markdown(trials: pd.DataFrame, uses: dict[str, frozenset[str] | None]) -> str:
    """The trials table for reading: the settings every trial shares in one line, then a row a
    trial with the settings that vary, ``-`` where its method does not use one."""
    varying = _searched(trials, uses)
    shown = [
        "trial_id",
        *(["label"] if trials["labelled"].any() else []),
        "method",
        *varying,
        "final_status",
        "epochs_run",
        "best_epoch",
        OBJECTIVE,
        REPORTED,
    ]
    table = trials[[c for c in dict.fromkeys(shown) if c in trials]].astype(object)
    for name in varying:
        methods = uses.get(name)
        if methods is not None:
            table.loc[~trials["method"].isin(methods), name] = NOT_USED
    skip = {
        "trial_id",
        "label",
        "labelled",
        "method",
        "final_status",
        "stopped_early",
        "best_epoch",
        "epochs_run",
        *CURVE_METRICS,
        *varying,
    }
    shared = [
        f"{c} {trials[c].dropna().iloc[0]}"
        for c in trials.columns
        if c not in skip and trials[c].nunique() == 1 and trials[c].notna().all()
    ]
    note = ("Every trial: " + ", ".join(shared) + ".\n\n") if shared else ""
    key = (
        f"`{NOT_USED}`: the trial's method does not use that setting. {OBJECTIVE} and "
        f"{REPORTED} at the trial's best epoch on dev; `{STOPPED_EARLY}`: stopped before the last "
        "epoch (compare it at equal epochs: the setting plots).\n\n"
    )
    return note + key + markdown_table(table)


def settings_table(
    trials: pd.DataFrame, params: list[str], curves: pd.DataFrame, epochs: list[int]
) -> pd.DataFrame:
    """trial_id, method, the settings, epochs run, stopped early, and val Q->AR at each compared
    epoch (empty where the trial did not reach it)."""
    table = trials[["trial_id", "method", *params, "epochs_run"]].copy()
    table["stopped early"] = trials["stopped_early"].map({True: "yes", False: ""})
    for epoch in epochs:
        table[at_epoch(epoch)] = table["trial_id"].map(values_at(curves, epoch))
    return table.sort_values(params[0]).reset_index(drop=True)


def _equal_epochs_caption(epochs: list[int]) -> str:
    at = ", ".join(f"epoch {e}" for e in epochs)
    return (
        f"Validation Q->AR at equal epochs ({at}): each trial is compared only with trials "
        "at the same epoch, never a 1-epoch value with a longer run's. `stopped early`: "
        "ASHA (or patience) stopped the trial before the last epoch; it has no value at the "
        "later epochs."
    )
