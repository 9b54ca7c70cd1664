"""The VCR leaderboard CSV and its scoring.

The CSV has one row per question and 21 columns: ``annot_id``, ``answer_0..3`` (answer
probabilities) and ``rationale_conditioned_on_a{i}_{j}`` (rationale j's probability given answer i).
Scoring, as the leaderboard: Q->A is the argmax of the answer columns; QA->R the argmax of the
rationale columns conditioned on the *gold* answer; Q->AR both right. The seed paper also reports
QA->R conditioned on the *predicted* answer, given here as ``qa2r_pred``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from vcrnet.errors import InputError

ANSWER_COLUMNS = [f"answer_{i}" for i in range(4)]
RATIONALE_COLUMNS = [f"rationale_conditioned_on_a{i}_{j}" for i in range(4) for j in range(4)]
COLUMNS = ["annot_id", *ANSWER_COLUMNS, *RATIONALE_COLUMNS]


def score(answer_probs: torch.Tensor, rationale_probs: torch.Tensor,
          answer_labels: torch.Tensor, rationale_labels: torch.Tensor) -> dict[str, float]:
    """``answer_probs [N, 4]``, ``rationale_probs [N, 4, 4]`` (row i: given answer i)."""
    rows = torch.arange(len(answer_labels), device=answer_labels.device)
    predicted = answer_probs.argmax(-1)
    answer_right = predicted == answer_labels
    given_gold = rationale_probs[rows, answer_labels].argmax(-1) == rationale_labels
    given_predicted = rationale_probs[rows, predicted].argmax(-1) == rationale_labels
    return {"q2a": answer_right.float().mean().item(),
            "qa2r": given_gold.float().mean().item(),
            "qa2r_pred": given_predicted.float().mean().item(),
            "q2ar": (answer_right & given_gold).float().mean().item()}


def write_csv(path: str | Path, annot_ids: list[str], answer_probs: torch.Tensor,
              rationale_probs: torch.Tensor) -> Path:
    """Write the 21-column CSV atomically."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for annot_id, a, r in zip(annot_ids, answer_probs.tolist(),
                                  rationale_probs.flatten(1).tolist()):
            writer.writerow([annot_id, *(f"{p:.6f}" for p in a), *(f"{p:.6f}" for p in r)])
    os.replace(tmp, path)
    return path


def read_csv(path: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``(annot_ids, answer_probs [N, 4], rationale_probs [N, 4, 4])``; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != COLUMNS:
            raise InputError(f"{path}:1: expected the 21 leaderboard columns "
                             f"annot_id, answer_0..3, rationale_conditioned_on_a0_0..a3_3")
        ids, values = [], []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(COLUMNS):
                raise InputError(f"{path}:{number}: expected 21 columns, got {len(row)}")
            try:
                values.append([float(v) for v in row[1:]])
            except ValueError:
                raise InputError(f"{path}:{number}: a probability is not a number") from None
            ids.append(row[0])
    table = torch.tensor(values, dtype=torch.float64).reshape(len(ids), 20)
    return ids, table[:, :4], table[:, 4:].reshape(len(ids), 4, 4)
