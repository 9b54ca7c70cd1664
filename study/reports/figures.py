"""The ablations' figures: matplotlib PNGs (settings at equal epochs, learning curves,
importances, parallel coordinates) and their interactive plotly pages (HTML)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from study.reports.tables import at_epoch
from vcrnet.atomic import replacing
from vcrnet.metrics import REPORTED


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
            at = table[table[at_epoch(epoch)].notna() & table[param].notna()]
            for (method, stopped), group in at.groupby(["method", "stopped early"]):
                ax.scatter(
                    group[param],
                    group[at_epoch(epoch)],
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
        row[0].set_ylabel(f"{REPORTED} at that epoch")
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
            group[REPORTED],
            color=colours[method],
            alpha=0.7,
            marker="o",
            markersize=3,
        )
        if trial in stopped:
            last = group.iloc[-1]
            ax.plot(
                last["epoch"],
                last[REPORTED],
                color=colours[method],
                marker="x",
                markersize=9,
                mew=2,
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
        ax.set_title(textwrap.fill(importance_title(rows.iloc[0]), 44), fontsize=8)
        ax.set_xlabel("importance (fANOVA)")
        _few_ticks(ax.xaxis)
    return fig


def parallel_figure(table: pd.DataFrame, params: list[str], epoch: int, log_params: set[str]):
    """Parallel coordinates: an axis a setting (those every method uses: a method's own are in
    its plot), then val Q->AR at ``epoch``; a line a trial, coloured by its value; dashed where
    stopped early."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    columns = [*params, at_epoch(epoch)]
    scaled, labels = {}, {}
    for col in columns:
        scaled[col], labels[col] = _unit_scale(table[col], col in log_params)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(columns) + 1.5), 4.2), layout="constrained")
    cmap = plt.get_cmap("viridis")
    value = scaled[at_epoch(epoch)]
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
    ax.set_title(f"every trial at epoch {epoch} ({len(table)}), coloured by {REPORTED}", fontsize=9)
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


def forest_figure(table: pd.DataFrame, reading: str):
    """The verdict's pairs (``verdict.verdict_table``), one row each: the difference A - B and
    its 95% interval, a dashed line at 0; pairs with a verdict drawn dark, the others grey."""
    plt = _pyplot()
    fig, ax = plt.subplots(layout="constrained", figsize=(7.0, 0.45 * len(table) + 1.4))
    labels = [f"{a} - {b}" for a, b in zip(table["A"], table["B"])]
    shown = table["verdict"].str.contains(" > ", regex=False)  # "A > B": a difference shown
    for y, (_, row) in enumerate(table.iterrows()):
        colour = "black" if shown.iloc[y] else "grey"
        ax.errorbar(
            row["A - B"],
            y,
            xerr=[[row["A - B"] - row["95% low"]], [row["95% high"] - row["A - B"]]],
            fmt="o",
            color=colour,
            capsize=3,
        )
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(table)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference in {reading} (95% interval)")
    ax.set_title("verdict: pairwise differences (dark: a difference shown)", fontsize=10)
    return fig


def forest_html(table: pd.DataFrame, reading: str, stem: Path) -> list[Path]:
    import plotly.graph_objects as go

    labels = [f"{a} - {b}" for a, b in zip(table["A"], table["B"])]
    figure = go.Figure(
        go.Scatter(
            x=table["A - B"],
            y=labels,
            mode="markers",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": table["95% high"] - table["A - B"],
                "arrayminus": table["A - B"] - table["95% low"],
            },
            text=[f"{v} (p Holm {p:.3g})" for v, p in zip(table["verdict"], table["p (Holm)"])],
        )
    )
    figure.add_vline(x=0.0, line_dash="dash")
    figure.update_layout(
        title="verdict: pairwise differences", xaxis_title=f"difference in {reading}"
    )
    figure.update_yaxes(autorange="reversed")
    return [_atomic_html(figure, stem.with_suffix(".html"))]


def save_figure(fig, stem: Path) -> list[Path]:
    png = stem.with_suffix(".png")
    with replacing(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)
    return [png]


def settings_html(
    table: pd.DataFrame, params: list[str], epochs: list[int], stem: Path
) -> list[Path]:
    import plotly.express as px

    long = table.melt(
        id_vars=["trial_id", "method", "stopped early", *params],
        value_vars=[at_epoch(e) for e in epochs],
        var_name="epoch",
        value_name=REPORTED,
    ).melt(
        id_vars=["trial_id", "method", "stopped early", "epoch", REPORTED],
        value_vars=params,
        var_name="setting",
        value_name="value",
    )
    figure = px.scatter(
        long.dropna(subset=[REPORTED, "value"]),
        x="value",
        y=REPORTED,
        color="method",
        symbol="stopped early",
        facet_col="epoch",
        facet_row="setting",
        hover_data=["trial_id"],
        title=stem.name,
    )
    figure.update_xaxes(matches=None)
    return [_atomic_html(figure, stem.with_suffix(".html"))]


def curves_html(curves: pd.DataFrame, stem: Path) -> list[Path]:
    import plotly.express as px

    return [
        _atomic_html(
            px.line(
                curves,
                x="epoch",
                y=REPORTED,
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


def importance_title(row: pd.Series) -> str:
    return f"epoch {row['epoch']}: {row['trials']} trials" + (
        f" - {row['note']}" if row["note"] else ""
    )
