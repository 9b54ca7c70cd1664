"""The report's shared table helpers: a table written as CSV and Markdown, validation Q->AR
at one epoch, and the column that names it."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from vcrnet.atomic import write_text
from vcrnet.metrics import REPORTED


def at_epoch(epoch: int) -> str:
    return f"{REPORTED} at epoch {epoch}"


def values_at(curves: pd.DataFrame, epoch: int, metric: str = REPORTED) -> pd.Series:
    """trial_id -> ``metric`` at exactly ``epoch`` (trials that did not reach it are absent)."""
    if curves.empty or metric not in curves:
        return pd.Series(dtype=float)
    rows = curves[(curves["epoch"] == epoch) & curves[metric].notna()]
    return rows.set_index("trial_id")[metric]


def write_table(
    table: pd.DataFrame, stem: Path, title: str = "", markdown: str | None = None
) -> list[Path]:
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    write_text(csv, table.to_csv(index=False))
    write_text(md, (f"{title}\n\n" if title else "") + (markdown or markdown_table(table)))
    return [csv, md]


def markdown_table(table: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([head, rule, *body]) + "\n"
