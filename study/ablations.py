"""``vcr-study ablations``: a study's tables and plots, like the seed paper's.

Everything is read back from MLflow (and the Optuna journal for importances), written under
``reports/<name>/`` (CSV + Markdown tables, PNG + interactive HTML plots) and logged to the
study's parent run:

- ``best_per_method``: the best trial of each approach (a method, or a labelled grid row) at its
  best epoch on dev (what it selected on), with its validation numbers (never selected on);
- ``paper_table1``, ``paper_table2``, ``paper_table4``: for a study of ``paper.yaml``, the seed
  paper's Tables 1, 2 and 4 in its layout, its numbers beside the study's (``study.paper``);
- ``loss_ratio``: best Q->AR against the rationale:answer loss ratio, softmax and Gumbel (Table 4);
- ``gumbel_schedule``, ``rl_samples``, ``baseline_rate``: Q->AR against each method's own setting;
- ``learning_curves``: validation Q->AR per epoch, every trial, coloured by method;
- ``importances``: Optuna's parameter importances (searched studies with enough trials).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from study import paper
from study.results import trial_runs
from vcrnet.atomic import replacing, write_text
from vcrnet.train import OBJECTIVE, REPORTED

METRIC = REPORTED  # what the plots show: val Q->AR, at each trial's best epoch on dev (OBJECTIVE)
TABLE1_COLUMNS = {"val_q2a": "Q->A", "val_qa2r": "QA->R (gold answer)",
                  "val_qa2r_pred": "QA->R (predicted answer)", "val_q2ar": "Q->AR"}
# every metric the tables read at a trial's best epoch (the paper's rows read their own decoding)
CURVE_METRICS = tuple(dict.fromkeys([OBJECTIVE, *TABLE1_COLUMNS, *(
    m for _, rows in paper.TABLES.values() for r in rows for m in (r.qa2r_metric,
                                                                   r.q2ar_metric))]))
SETTINGS = {  # plot name -> (methods, the params it shows)
    "loss_ratio": (("softmax", "gumbel"), ("loss_ratio",)),
    "gumbel_schedule": (("gumbel",), ("tau_start", "tau_end", "anneal_epochs")),
    "rl_samples": (("reinforce",), ("num_samples",)),
    "baseline_rate": (("teacher",), ("correct_answer_rate",)),
}


def build_report(client: MlflowClient, parent_run_id: str, out: Path,
                 optuna_journal: Path | None = None, study_name: str = "",
                 comparable: bool = False) -> list[Path]:
    """Write every table and plot to ``out``; returns the files written. ``comparable``: the
    study ran on VCR 1.0 val, so the paper's numbers can stand beside its own."""
    out.mkdir(parents=True, exist_ok=True)
    runs = trial_runs(client, parent_run_id)
    if runs.empty:
        return []
    curves = learning_curves(client, runs)
    trials = _trial_table(runs, curves)
    written = _write_table(trials, out / "trials")
    written += _write_table(table1(trials), out / "best_per_method")
    labelled = trials[trials["labelled"]]  # the paper's rows are labelled grid rows, by name
    for name, (title, table) in paper.paper_tables(best_per_label(labelled), comparable).items():
        written += _write_table(table, out / name, title)
    for name, (methods, params) in SETTINGS.items():
        subset = trials[trials["method"].isin(methods)]
        cols = [p for p in params if p in subset and subset[p].notna().any()]
        if subset.empty or not cols:
            continue
        written += _write_table(subset[["trial_id", "method", *cols, METRIC]]
                                .sort_values(cols[0]), out / name)
        written += _scatter(subset, cols, out / name)
    if not curves.empty:
        written += _curves_plot(curves, out / "learning_curves")
    if optuna_journal is not None and optuna_journal.is_file():
        written += _importances(optuna_journal, study_name, out / "importances")
    if (out / "plotly.min.js").is_file():  # what the HTML pages load
        written.append(out / "plotly.min.js")
    for path in written:
        client.log_artifact(parent_run_id, str(path), artifact_path="ablations")
    return written


def learning_curves(client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: trial_id, method, epoch and every validation metric at that epoch."""
    rows = []
    for run in runs.itertuples():
        per_epoch: dict[int, dict] = {}
        for key in CURVE_METRICS:
            for m in client.get_metric_history(run.run_id, key):
                per_epoch.setdefault(m.step, {})[key] = m.value
        rows += [{"trial_id": run.trial_id, "method": run.method, "epoch": step, **values}
                 for step, values in sorted(per_epoch.items())]
    return pd.DataFrame(rows)


def best_per_label(trials: pd.DataFrame) -> pd.DataFrame:
    """The best trial of each approach (label: a grid row's name, else the method), at its best
    epoch."""
    if OBJECTIVE not in trials:
        return trials.iloc[0:0]
    scored = trials[trials[OBJECTIVE].notna()]
    return scored.loc[scored.groupby("label")[OBJECTIVE].idxmax()]


def table1(trials: pd.DataFrame) -> pd.DataFrame:
    """The best trial of each approach, at its best epoch, every method's QA->R readings."""
    best = best_per_label(trials)
    table = best[["label", "method", "trial_id", "best_epoch", OBJECTIVE, *TABLE1_COLUMNS]].rename(
        columns={"label": "approach", OBJECTIVE: "dev Q->AR (selected on)", **TABLE1_COLUMNS})
    return table.sort_values("Q->AR", ascending=False).reset_index(drop=True)


def _trial_table(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its params (numbers where they are numbers) and its best epoch."""
    rows = []
    for run in runs.to_dict("records"):
        row = {"trial_id": run["trial_id"], "label": run["label"], "labelled": run["labelled"],
               "method": run["method"], "final_status": run["final_status"]}
        row.update({k.removeprefix("params."): _number(v) for k, v in run.items()
                    if k.startswith("params.")})
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


def _write_table(table: pd.DataFrame, stem: Path, title: str = "") -> list[Path]:
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    write_text(csv, table.to_csv(index=False))
    write_text(md, (f"{title}\n\n" if title else "") + _markdown(table))
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


def _scatter(trials: pd.DataFrame, params: list[str], stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.express as px

    fig, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 3.6), squeeze=False)
    for ax, param in zip(axes[0], params):
        for method, group in trials.groupby("method"):
            ax.scatter(group[param], group[METRIC], label=method, alpha=0.8)
        ax.set_xlabel(param)
        ax.set_ylabel("validation Q->AR at the best dev epoch")
        if param in ("num_samples", "loss_ratio"):
            ax.set_xscale("log")
    axes[0][0].legend()
    fig.tight_layout()
    png = stem.with_suffix(".png")
    _atomic_figure(fig, png)
    plt.close(fig)
    long = trials.melt(id_vars=["trial_id", "method", METRIC], value_vars=params,
                       var_name="setting", value_name="value")
    html = stem.with_suffix(".html")
    figure = px.scatter(long, x="value", y=METRIC, color="method", facet_col="setting",
                        hover_data=["trial_id"], title=stem.name)
    figure.update_xaxes(matches=None)
    _atomic_html(figure, html)
    return [png, html]


def _curves_plot(curves: pd.DataFrame, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.express as px
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = {m: f"C{i}" for i, m in enumerate(sorted(curves["method"].dropna().unique()))}
    for (_trial, method), group in curves.groupby(["trial_id", "method"]):
        ax.plot(group["epoch"], group[METRIC], color=colours[method], alpha=0.7, marker="o",
                label=method)
    handles = {label: h for h, label in zip(*ax.get_legend_handles_labels())}
    ax.legend(handles.values(), handles.keys())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Q->AR")
    fig.tight_layout()
    png = stem.with_suffix(".png")
    _atomic_figure(fig, png)
    plt.close(fig)
    html = stem.with_suffix(".html")
    _atomic_html(px.line(curves, x="epoch", y=METRIC, color="method", line_group="trial_id",
                         markers=True, hover_data=["trial_id"], title="learning curves"), html)
    return [png, html]


def _importances(journal: Path, study_name: str, stem: Path) -> list[Path]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 3:
        return []
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. every trial the same value
        return []
    table = pd.DataFrame({"param": list(importances), "importance": list(importances.values())})
    written = _write_table(table, stem)
    html = stem.with_suffix(".html")
    _atomic_html(optuna.visualization.plot_param_importances(study), html)
    return [*written, html]


def _atomic_figure(fig, path: Path) -> None:
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=110)


def _atomic_html(figure, path: Path) -> None:
    # the plotly script sits once beside the pages, so they open offline
    with replacing(path) as tmp:
        figure.write_html(tmp, include_plotlyjs="directory")
