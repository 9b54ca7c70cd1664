"""The seed paper's validation tables, and a study's results in the same layout beside them.

The rows are the approaches of ``search_spaces/paper.yaml``, matched by its grid labels. Each row
names the study metrics that measure what the paper's numbers measured, as the seed code decoded
them (``vcrnet/leaderboard.py`` has the metric table; ``docs/fidelity.md`` E2 the code read): R2C's
QA->R is the rationale given the gold answer (the leaderboard's); the new baseline and RL sampling
scored the rationale given the predicted answer; softmax and Gumbel under the answer mixture;
direct cross entropy's "QA->R" (13.83%) is the 16-way pick of (answer, rationale) both right, and
its Q->AR the answer module right as well.

The paper's numbers are on VCR 1.0 val (26,534 questions). A study on other data (the built-in
synthetic set) gets the same tables, marked as not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

VCR_VAL_QUESTIONS = 26_534  # VCR 1.0 val.jsonl


@dataclass(frozen=True)
class PaperRow:
    label: str  # the grid label in paper.yaml
    q2a: float  # the paper's numbers, in %
    qa2r: float
    q2ar: float
    qa2r_metric: str = "val_qa2r"  # the study metric that measures the paper's QA->R
    q2ar_metric: str = "val_q2ar"


R2C = PaperRow("R2C", 63.8, 67.2, 43.1)
NEW_BASELINE = PaperRow("new baseline", 63.8, 56.4, 38.2, "val_qa2r_pred")
DIRECT = PaperRow(
    "direct cross entropy", 61.55, 13.83, 8.42, "val_q2ar_joint16", "val_q2a_and_joint16"
)
RL = PaperRow("RL sampling", 57.2, 53.2, 34.4, "val_qa2r_pred")
SOFTMAX = PaperRow("softmax", 63.76, 61.61, 39.76, "val_qa2r_mixture", "val_q2ar_mixture")
GUMBEL = PaperRow("Gumbel softmax", 64.54, 61.05, 40.28, "val_qa2r_mixture", "val_q2ar_mixture")
SOFTMAX_1_4 = PaperRow("softmax 1:4", 58.1, 62.18, 37.01, "val_qa2r_mixture", "val_q2ar_mixture")
GUMBEL_1_4 = PaperRow(
    "Gumbel softmax 1:4", 59.32, 61.07, 37.06, "val_qa2r_mixture", "val_q2ar_mixture"
)

TABLES = {
    "paper_table1": (
        "Table 1. Model performance results (val)",
        [NEW_BASELINE, DIRECT, RL, SOFTMAX, GUMBEL],
    ),
    "paper_table2": (
        "Table 2. Comparison with the new baseline (val)",
        [R2C, NEW_BASELINE, GUMBEL],
    ),
    "paper_table4": (
        "Table 4. Ablation study for losses (val; loss ratio Q->A : QA->R)",
        [SOFTMAX_1_4, SOFTMAX, GUMBEL_1_4, GUMBEL],
    ),
}


def comparable(data: str | None) -> bool:
    """Whether a study's numbers can stand beside the paper's: its data is VCR 1.0 (judged by
    the size of val.jsonl), not the built-in synthetic set."""
    if not data:
        return False
    val = Path(data) / "val.jsonl"
    if not val.is_file():
        return False
    with val.open("rb") as f:
        return sum(1 for _ in f) == VCR_VAL_QUESTIONS


def paper_tables(best: pd.DataFrame, is_comparable: bool) -> dict[str, tuple[str, pd.DataFrame]]:
    """``best``: one row per label (the best trial of each, at its best epoch) with the study's
    metric columns (fractions), its ``objective`` and that objective's value ``dev_selected``.
    Returns ``{name: (title, table)}`` for the tables with at least one of their rows in the
    study, each row saying what its trial was selected on, sorted by that dev value (rows
    without a trial last); study numbers in %."""
    by_label = best.set_index("label") if not best.empty else best
    out = {}
    for name, (title, rows) in TABLES.items():
        if not any(row.label in by_label.index for row in rows):
            continue
        records = [
            _row(row, by_label.loc[row.label] if row.label in by_label.index else None)
            for row in rows
        ]
        table = pd.DataFrame(records).sort_values(  # by what was selected on, never val
            "dev study (selected on)", ascending=False, kind="stable", na_position="last"
        )
        note = "" if is_comparable else " - NOT COMPARABLE: the study's data is not VCR 1.0 val"
        out[name] = (title + note, table.reset_index(drop=True))
    return out


def _row(row: PaperRow, study: pd.Series | None) -> dict:
    def pct(metric: str) -> float | None:
        if study is None or metric not in study or pd.isna(study[metric]):
            return None
        return round(100 * float(study[metric]), 2)

    return {
        "approach": row.label,
        "Q->A paper": row.q2a,
        "Q->A study": pct("val_q2a"),
        "QA->R paper": row.qa2r,
        "QA->R study": pct(row.qa2r_metric),
        "Q->AR paper": row.q2ar,
        "Q->AR study": pct(row.q2ar_metric),
        "QA->R measured as": row.qa2r_metric,
        "selected on": None if study is None else study.get("objective"),
        "dev study (selected on)": pct("dev_selected"),
        "trial": None if study is None else study.get("trial_id"),
    }
