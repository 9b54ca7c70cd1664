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
  paper's Tables 1, 2 and 4 in its layout, its numbers beside the study's (``study.paper``);
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

import math
import textwrap
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from study import paper
from study.results import trial_runs
from study.spaces import SearchSpace
from vcrnet.atomic import replacing, write_text
from vcrnet.train import OBJECTIVE, REPORTED

METRIC = REPORTED  # what the plots show: val Q->AR (selection is on dev, OBJECTIVE)
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
STOPPED = "STOPPED_EARLY"  # the final_status tag of a trial ASHA (or patience) stopped
NOT_USED = "-"  # a Markdown cell: the trial's method does not use that setting
LOG_SCALE = ("loss_ratio", "lr", "num_samples")  # log axes where the space does not say
MAX_COMPARED = 3  # compared epochs at most: the first, the last and one rung between
# Importances over fewer trials than this get a note, not trust: fANOVA fits a random forest to
# the trials, and over 8 of them (the default study) two settings came out 0.50 and 0.49. A rule
# of thumb, not a measurement of the estimate's spread.
MIN_TRIALS_FOR_IMPORTANCE = 10


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
    out.mkdir(parents=True, exist_ok=True)
    runs = trial_runs(client, parent_run_id)
    if runs.empty:
        return []
    curves = learning_curves(client, runs)
    journal = _journal_study(optuna_journal, study_name)
    uses = settings_used(space, journal)
    trials = _trial_table(runs, curves, uses)
    epochs = compared_epochs(trials)
    log_params = _log_params(space, journal)
    written = _write_table(trials, out / "trials", markdown=trials_markdown(trials, uses))
    written += _write_table(table1(trials, approaches), out / "best_per_method")
    labelled = trials[trials["labelled"]]  # the paper's rows are labelled grid rows, by name
    for name, (title, table) in paper.paper_tables(best_per_label(labelled), comparable).items():
        written += _write_table(table, out / name, title)
    for name, (methods, params) in SETTINGS.items():
        subset = trials[trials["method"].isin(methods)]
        present = [p for p in params if p in subset and subset[p].nunique() > 0]
        cols = [p for p in present if subset[p].nunique() > 1] or present[:1]  # what varies
        if subset.empty or not cols:
            continue
        table = settings_table(subset, cols, curves, epochs)
        written += _write_table(table, out / name, _equal_epochs_caption(epochs))
        written += _figure(settings_figure(table, cols, epochs, log_params, name), out / name)
        written += _settings_html(table, cols, epochs, out / name)
    if not curves.empty:
        written += _figure(curves_figure(curves, trials), out / "learning_curves")
        written += _curves_html(curves, out / "learning_curves")
    common = [p for p in _searched(trials, uses) if uses.get(p) is None]  # every method's
    if common:
        written += _importances(trials, curves, epochs, common, log_params, out)
    if (out / "plotly.min.js").is_file():  # what the HTML pages load
        written.append(out / "plotly.min.js")
    for path in written:
        client.log_artifact(parent_run_id, str(path), artifact_path="ablations")
    return written


# --- reading the study back ---------------------------------------------------------------------
def learning_curves(client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: trial_id, method, epoch and every validation metric at that epoch."""
    rows = []
    for run in runs.itertuples():
        per_epoch: dict[int, dict] = {}
        for key in CURVE_METRICS:
            for m in client.get_metric_history(run.run_id, key):
                per_epoch.setdefault(m.step, {})[key] = m.value
        rows += [
            {"trial_id": run.trial_id, "method": run.method, "epoch": step, **values}
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
        (trials["final_status"] == STOPPED) & (trials["epochs_run"] > 0), "epochs_run"
    ]
    epochs = sorted({int(ran.min()), *map(int, stopped), int(ran.max())})
    if len(epochs) > MAX_COMPARED:
        epochs = [epochs[0], epochs[len(epochs) // 2], epochs[-1]]
    return epochs


def values_at(curves: pd.DataFrame, epoch: int, metric: str = METRIC) -> pd.Series:
    """trial_id -> ``metric`` at exactly ``epoch`` (trials that did not reach it are absent)."""
    if curves.empty or metric not in curves:
        return pd.Series(dtype=float)
    rows = curves[(curves["epoch"] == epoch) & curves[metric].notna()]
    return rows.set_index("trial_id")[metric]


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
            "stopped_early": run["final_status"] == STOPPED,
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
        if not mine.empty and OBJECTIVE in mine and mine[OBJECTIVE].notna().any():
            at_best = mine.loc[mine[OBJECTIVE].idxmax()]  # chosen on dev, reported on val
            row["best_epoch"] = int(at_best["epoch"])
            row["epochs_run"] = int(mine["epoch"].max())
            row.update({k: at_best.get(k) for k in CURVE_METRICS})
        else:
            row.update({"best_epoch": None, "epochs_run": 0, **dict.fromkeys(CURVE_METRICS)})
        rows.append(row)
    return pd.DataFrame(rows)


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
def best_per_label(trials: pd.DataFrame) -> pd.DataFrame:
    """The best trial of each approach (label: a grid row's name, else the method), at its best
    epoch."""
    if OBJECTIVE not in trials:
        return trials.iloc[0:0]
    scored = trials[trials[OBJECTIVE].notna()]
    return scored.loc[scored.groupby("label")[OBJECTIVE].idxmax()]


def table1(trials: pd.DataFrame, approaches: list[str] | None = None) -> pd.DataFrame:
    """The best trial of each approach, at its best epoch, every method's QA->R readings; an
    approach of ``approaches`` with no scored trial is a row of its own (``no trial``, or ``no
    result`` where its trials ran but none scored: failed, or NaN throughout)."""
    best = best_per_label(trials)
    table = best[
        ["label", "method", "trial_id", "best_epoch", "epochs_run", OBJECTIVE, *TABLE1_COLUMNS]
    ].rename(
        columns={
            "label": "approach",
            "epochs_run": "epochs run",
            OBJECTIVE: "dev Q->AR (selected on)",
            **TABLE1_COLUMNS,
        }
    )
    table = table.sort_values("Q->AR", ascending=False)
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
        METRIC,
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
        f"{METRIC} at the trial's best epoch on dev; `{STOPPED}`: stopped before the last "
        "epoch (compare it at equal epochs: the setting plots).\n\n"
    )
    return note + key + _markdown(table)


def settings_table(
    trials: pd.DataFrame, params: list[str], curves: pd.DataFrame, epochs: list[int]
) -> pd.DataFrame:
    """trial_id, method, the settings, epochs run, stopped early, and val Q->AR at each compared
    epoch (empty where the trial did not reach it)."""
    table = trials[["trial_id", "method", *params, "epochs_run"]].copy()
    table["stopped early"] = trials["stopped_early"].map({True: "yes", False: ""})
    for epoch in epochs:
        table[_at(epoch)] = table["trial_id"].map(values_at(curves, epoch))
    return table.sort_values(params[0]).reset_index(drop=True)


def _at(epoch: int) -> str:
    return f"{METRIC} at epoch {epoch}"


def _equal_epochs_caption(epochs: list[int]) -> str:
    at = ", ".join(f"epoch {e}" for e in epochs)
    return (
        f"Validation Q->AR at equal epochs ({at}): each trial is compared only with trials "
        "at the same epoch, never a 1-epoch value with a longer run's. `stopped early`: "
        "ASHA (or patience) stopped the trial before the last epoch; it has no value at the "
        "later epochs."
    )


def _write_table(
    table: pd.DataFrame, stem: Path, title: str = "", markdown: str | None = None
) -> list[Path]:
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    write_text(csv, table.to_csv(index=False))
    write_text(md, (f"{title}\n\n" if title else "") + (markdown or _markdown(table)))
    return [csv, md]


def _markdown(table: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([head, rule, *body]) + "\n"


# --- figures ------------------------------------------------------------------------------------
def settings_figure(
    table: pd.DataFrame, params: list[str], epochs: list[int], log_params: set[str], name: str = ""
):
    """One panel a (setting, compared epoch): val Q->AR at that epoch against the setting,
    a colour a method, trials stopped early drawn with a cross."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(
        len(params),
        len(epochs),
        squeeze=False,
        layout="constrained",
        figsize=(3.6 * len(epochs) + 1.6, 3.0 * len(params) + 0.8),
    )
    colours = _colours(table["method"])
    for row, param in zip(axes, params):
        for ax, epoch in zip(row, epochs):
            at = table[table[_at(epoch)].notna() & table[param].notna()]
            for (method, stopped), group in at.groupby(["method", "stopped early"]):
                ax.scatter(
                    group[param],
                    group[_at(epoch)],
                    color=colours[method],
                    alpha=0.8,
                    marker="x" if stopped else "o",
                    s=36,
                )
            ax.set_title(f"epoch {epoch}: {len(at)} trial{'s' * (len(at) != 1)}", fontsize=9)
            ax.set_xlabel(param)
            if param in log_params:
                _log_axis(ax, at[param] if not at.empty else table[param])
            else:
                _few_ticks(ax.xaxis, integer=bool((table[param].dropna() % 1 == 0).all()))
        row[0].set_ylabel(f"{METRIC} at that epoch")
    handles = [Line2D([], [], color=c, marker="o", ls="", label=m) for m, c in colours.items()]
    if table["stopped early"].astype(bool).any():
        handles.append(Line2D([], [], color="grey", marker="x", ls="", label="stopped early"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(f"{name}: validation Q->AR at equal epochs", fontsize=10)
    return fig


def curves_figure(curves: pd.DataFrame, trials: pd.DataFrame):
    """Validation Q->AR per epoch, a line a trial, a colour a method; a trial stopped early
    ends in a cross."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
    colours = _colours(curves["method"])
    stopped = set(trials.loc[trials["stopped_early"], "trial_id"])
    for (trial, method), group in curves.groupby(["trial_id", "method"]):
        ax.plot(
            group["epoch"],
            group[METRIC],
            color=colours[method],
            alpha=0.7,
            marker="o",
            markersize=3,
        )
        if trial in stopped:
            last = group.iloc[-1]
            ax.plot(
                last["epoch"], last[METRIC], color=colours[method], marker="x", markersize=9, mew=2
            )
    handles = [Line2D([], [], color=c, marker="o", label=m) for m, c in colours.items()]
    if stopped:
        handles.append(
            Line2D([], [], color="grey", marker="x", ls="", mew=2, label="stopped early")
        )
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Q->AR")
    return fig


def importance_figure(table: pd.DataFrame):
    """A bar chart per compared epoch; its title says how many trials and, where too few, so."""
    plt = _pyplot()
    epochs = list(dict.fromkeys(table["epoch"]))
    fig, axes = plt.subplots(
        1,
        len(epochs),
        squeeze=False,
        sharex=True,
        figsize=(4.2 * len(epochs), 0.45 * table["param"].nunique() + 2.2),
        layout="constrained",
    )
    for ax, epoch in zip(axes[0], epochs):
        rows = table[table["epoch"] == epoch].iloc[::-1]
        ax.barh(
            rows["param"],
            rows["importance"].fillna(0.0),
            color="lightgrey" if rows["note"].iloc[0] else "C0",
        )
        ax.set_title(textwrap.fill(_importance_title(rows.iloc[0]), 44), fontsize=8)
        ax.set_xlabel("importance (fANOVA)")
        _few_ticks(ax.xaxis)
    return fig


def parallel_figure(table: pd.DataFrame, params: list[str], epoch: int, log_params: set[str]):
    """Parallel coordinates: an axis a setting (those every method uses: a method's own are in
    its plot), then val Q->AR at ``epoch``; a line a trial, coloured by its value; dashed where
    stopped early."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    columns = [*params, _at(epoch)]
    scaled, labels = {}, {}
    for col in columns:
        scaled[col], labels[col] = _unit_scale(table[col], col in log_params)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(columns) + 1.5), 4.2), layout="constrained")
    cmap = plt.get_cmap("viridis")
    value = scaled[_at(epoch)]
    for i in range(len(table)):
        ys = [scaled[c].iloc[i] for c in columns]
        ax.plot(
            range(len(columns)),
            ys,
            color=cmap(value.iloc[i]),
            alpha=0.8,
            ls="--" if table["stopped_early"].iloc[i] else "-",
            lw=1.2,
        )
    for x, col in enumerate(columns):
        ax.axvline(x, color="black", lw=0.6)
        for y, text in labels[col]:
            ax.text(x + 0.04, y, text, fontsize=7, va="center")
    ax.set_xticks(range(len(columns)), [textwrap.fill(c, 14) for c in columns], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(columns) - 0.5)
    ax.set_ylim(-0.06, 1.06)
    ax.legend(
        handles=[
            Line2D([], [], color="grey", label="ran to this epoch or beyond"),
            Line2D([], [], color="grey", ls="--", label="stopped early"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=2,
        fontsize=8,
    )
    ax.set_title(f"every trial at epoch {epoch} ({len(table)}), coloured by {METRIC}", fontsize=9)
    return fig


def _unit_scale(values: pd.Series, log: bool) -> tuple[pd.Series, list[tuple[float, str]]]:
    """Values mapped onto 0..1 for a parallel axis, and a few (position, label) marks."""
    numbers = pd.to_numeric(values, errors="coerce")
    if values.notna().any() and numbers[values.notna()].isna().any():  # categories
        cats = sorted(values.dropna().astype(str).unique())
        pos = {c: i / max(len(cats) - 1, 1) for i, c in enumerate(cats)}
        return values.map(lambda v: pos.get(str(v)) if pd.notna(v) else None).astype(float), [
            (pos[c], c) for c in cats
        ]
    lo, hi = numbers.min(), numbers.max()
    if pd.isna(lo):
        return numbers, []
    log = log and lo > 0
    f = (lambda v: math.log(v)) if log else (lambda v: v)
    span = (f(hi) - f(lo)) or 1.0
    unit = numbers.map(lambda v: (f(v) - f(lo)) / span if pd.notna(v) else None).astype(float)
    ticks = _nice_ticks(lo, hi, log)
    return unit, [
        ((f(t) - f(lo)) / span, f"{t:g}") for t in ticks if f(lo) - 1e-12 <= f(t) <= f(hi) + 1e-12
    ] or [(0.0, f"{lo:g}")]


def _nice_ticks(lo: float, hi: float, log: bool, count: int = 4) -> list[float]:
    """A few round values across [lo, hi] (two significant digits), evenly spaced on the axis'
    own scale."""
    import numpy as np

    if lo == hi:
        return [float(f"{lo:.2g}")]
    raw = np.geomspace(lo, hi, count) if log and lo > 0 else np.linspace(lo, hi, count)
    return sorted({float(f"{v:.2g}") for v in raw})


def _log_axis(ax, values: pd.Series) -> None:
    """A log x axis with a few plain decimal labels (matplotlib's own print 1.9x10^0 2x10^0
    ... over a narrow range, on top of each other)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty or numbers.min() <= 0:
        return
    lo, hi = float(numbers.min()), float(numbers.max())
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.08, hi * 1.08)
    ticks = [t for t in _nice_ticks(lo, hi, True) if lo / 1.08 <= t <= hi * 1.08]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _few_ticks(axis, integer: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(4, integer=integer))


def _colours(methods: pd.Series) -> dict[str, str]:
    return {m: f"C{i}" for i, m in enumerate(sorted(methods.dropna().unique()))}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- importances --------------------------------------------------------------------------------
def importances(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    epochs: list[int],
    params: list[str],
    log_params: set[str],
) -> pd.DataFrame:
    """fANOVA importances of the settings every compared trial uses, per compared epoch, over
    the trials that reached it: epoch, trials, param, importance, note (why not to trust them,
    or why there are none)."""
    rows = []
    for epoch in epochs:
        at = trials.assign(value=trials["trial_id"].map(values_at(curves, epoch)))
        at = at[at["value"].notna()]
        common = [p for p in params if at[p].notna().all() and at[p].nunique() > 1]
        found, problem = _fanova(at, common, log_params)
        note = problem or (
            f"too few trials (under {MIN_TRIALS_FOR_IMPORTANCE}) for importances to mean anything"
            if len(at) < MIN_TRIALS_FOR_IMPORTANCE
            else ""
        )
        rows += [
            {"epoch": epoch, "trials": len(at), "param": p, "importance": v, "note": note}
            for p, v in (found or dict.fromkeys(common or ["(none)"])).items()
        ]
    return pd.DataFrame(rows)


def _fanova(
    at: pd.DataFrame, params: list[str], log_params: set[str]
) -> tuple[dict[str, float], str]:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if len(at) < 3 or not params:
        return {}, f"{len(at)} trials, {len(params)} varying settings: no importances"
    dists = {}
    for p in params:
        numbers = pd.to_numeric(at[p], errors="coerce")
        if numbers.isna().any():
            dists[p] = CategoricalDistribution(sorted(at[p].astype(str).unique()))
        else:
            lo, hi = float(numbers.min()), float(numbers.max())
            dists[p] = FloatDistribution(lo, hi, log=p in log_params and lo > 0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for row in at.to_dict("records"):
        values = {
            p: str(row[p]) if isinstance(dists[p], CategoricalDistribution) else float(row[p])
            for p in params
        }
        study.add_trial(
            optuna.trial.create_trial(params=values, distributions=dists, value=float(row["value"]))
        )
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), ""
    except (RuntimeError, ValueError) as err:  # e.g. every trial the same value
        return {}, f"no importances: {err}"


def _importance_title(row: pd.Series) -> str:
    return f"epoch {row['epoch']}: {row['trials']} trials" + (
        f" - {row['note']}" if row["note"] else ""
    )


def _importances(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    epochs: list[int],
    params: list[str],
    log_params: set[str],
    out: Path,
) -> list[Path]:
    table = importances(trials, curves, epochs, params, log_params)
    notes = [f"- {_importance_title(r)}" for _, r in table.drop_duplicates("epoch").iterrows()]
    caption = (
        "Parameter importances (Optuna's fANOVA) at equal epochs, over the settings "
        "every trial at that epoch uses (a method's own settings: its plot).\n\n" + "\n".join(notes)
    )
    written = _write_table(table, out / "importances", caption)
    written += _figure(importance_figure(table), out / "importances")
    first = epochs[0] if epochs else None
    if first is not None:
        at = trials.assign(**{_at(first): trials["trial_id"].map(values_at(curves, first))})
        at = at[at[_at(first)].notna()]
        if len(at) >= 2:
            written += _figure(
                parallel_figure(at.reset_index(drop=True), params, first, log_params),
                out / "parallel_coordinates",
            )
    return written


# --- writing ------------------------------------------------------------------------------------
def _figure(fig, stem: Path) -> list[Path]:
    png = stem.with_suffix(".png")
    with replacing(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)
    return [png]


def _settings_html(
    table: pd.DataFrame, params: list[str], epochs: list[int], stem: Path
) -> list[Path]:
    import plotly.express as px

    long = table.melt(
        id_vars=["trial_id", "method", "stopped early", *params],
        value_vars=[_at(e) for e in epochs],
        var_name="epoch",
        value_name=METRIC,
    ).melt(
        id_vars=["trial_id", "method", "stopped early", "epoch", METRIC],
        value_vars=params,
        var_name="setting",
        value_name="value",
    )
    figure = px.scatter(
        long.dropna(subset=[METRIC, "value"]),
        x="value",
        y=METRIC,
        color="method",
        symbol="stopped early",
        facet_col="epoch",
        facet_row="setting",
        hover_data=["trial_id"],
        title=stem.name,
    )
    figure.update_xaxes(matches=None)
    return [_atomic_html(figure, stem.with_suffix(".html"))]


def _curves_html(curves: pd.DataFrame, stem: Path) -> list[Path]:
    import plotly.express as px

    return [
        _atomic_html(
            px.line(
                curves,
                x="epoch",
                y=METRIC,
                color="method",
                line_group="trial_id",
                markers=True,
                hover_data=["trial_id"],
                title="learning curves",
            ),
            stem.with_suffix(".html"),
        )
    ]


def _atomic_html(figure, path: Path) -> Path:
    # the plotly script sits once beside the pages, so they open offline
    with replacing(path) as tmp:
        figure.write_html(tmp, include_plotlyjs="directory")
    return path
