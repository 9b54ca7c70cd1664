"""The VCR leaderboard CSV and its scoring, and the seed paper's other decodings.

The CSV has one row per question and 21 columns: ``annot_id``, ``answer_0..3`` (answer
probabilities) and ``rationale_conditioned_on_a{i}_{j}`` (rationale j's probability given answer i),
written with 9 significant digits (enough to round-trip float32, so an argmax read back cannot
tie). A CSV must have one row for each item of the split and no other (``rows_for``), each
cell a probability and each group of 4 summing to 1 (``read_csv``). Scoring
(``score``; of a CSV file, ``score_csv``), as the leaderboard: Q->A is the argmax of the answer
columns; QA->R the argmax of the rationale columns conditioned on the *gold* answer; Q->AR both
right.

The seed paper's Table 1 scored each method its own way (read from its code, docs/fidelity.md
E2), and some of those decodings cannot be read from the CSV: ``vcrnet.train.evaluate`` computes
all of them for every method, logged with the prefixes ``dev_`` and ``val_``. The table's names,
in its order, are ``DECODINGS`` (``vcrnet.metrics``, readable without torch):

===================  =================================================  =========================
metric               decoding                                           paper's number
===================  =================================================  =========================
``q2a``              argmax of the answer probabilities                 Q->A, every method
``qa2r``             rationale given the gold answer (leaderboard's)    QA->R of R2C
``q2ar``             ``q2a`` and ``qa2r`` both right (leaderboard's)    Q->AR of R2C, the new
                                                                        baseline, RL sampling
``qa2r_pred``        rationale given the predicted (argmax) answer      QA->R of the new baseline
                                                                        and of RL sampling
``qa2r_mixture``     rationale scored under the answer mixture,         QA->R of softmax and
                     ``mixed(softmax(answer_logits))``                  Gumbel-softmax (*)
``q2ar_mixture``     ``q2a`` and ``qa2r_mixture`` both right            their Q->AR
``qa2r_joint16``     one argmax over the 16 pair scores picks (a, r);   none (a diagnostic)
                     right when r is
``q2ar_joint16``     that pick's (a, r) both right                      QA->R of direct cross
                                                                        entropy (13.83%)
``q2a_and_joint16``  ``q2a`` and ``q2ar_joint16`` both right            Q->AR of direct cross
                                                                        entropy (8.42%)
===================  =================================================  =========================

Given a right answer, the rationale given the predicted answer is the rationale given the gold
one, so ``q2ar`` is also the Q->AR of the methods read with ``qa2r_pred``. (*) The seed decoded
Gumbel-softmax with a noisy sample at tau 1; ``qa2r_mixture`` uses the noiseless softmax weights.
The 16 pair scores are the coupling's (``Coupling.pair_scores``): for ``direct16`` the scores its
16-way softmax was trained on, for the others ``log p(a) + log p(r | a)``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vcrnet.atomic import replacing
from vcrnet.errors import InputError, not_utf8
from vcrnet.metrics import DECODINGS as DECODINGS  # re-exported: the table's names

if TYPE_CHECKING:
    from vcrnet.data import VCRItem

ANSWER_COLUMNS = [f"answer_{i}" for i in range(4)]
RATIONALE_COLUMNS = [f"rationale_conditioned_on_a{i}_{j}" for i in range(4) for j in range(4)]
COLUMNS = ["annot_id", *ANSWER_COLUMNS, *RATIONALE_COLUMNS]
# how far a row's 4 answer (or a group's 4 rationale) probabilities may sum from 1: write_csv's
# 9 significant digits of float32 softmax values are off by ~1e-7; a real error by far more
SUM_TOLERANCE = 1e-4


def score(
    answer_probs: torch.Tensor,
    rationale_probs: torch.Tensor,
    answer_labels: torch.Tensor,
    rationale_labels: torch.Tensor,
) -> dict[str, float]:
    """``answer_probs [N, 4]``, ``rationale_probs [N, 4, 4]`` (row i: given answer i)."""
    right = per_question(answer_probs, rationale_probs, answer_labels, rationale_labels)
    return {k: v.float().mean().item() for k, v in right.items()}


def per_question(
    answer_probs: torch.Tensor,
    rationale_probs: torch.Tensor,
    answer_labels: torch.Tensor,
    rationale_labels: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """``score``'s readings question by question: a bool tensor ``[N]`` each (right or not)."""
    rows = torch.arange(len(answer_labels), device=answer_labels.device)
    predicted = answer_probs.argmax(-1)
    answer_right = predicted == answer_labels
    given_gold = rationale_probs[rows, answer_labels].argmax(-1) == rationale_labels
    given_predicted = rationale_probs[rows, predicted].argmax(-1) == rationale_labels
    return {
        "q2a": answer_right,
        "qa2r": given_gold,
        "qa2r_pred": given_predicted,
        "q2ar": answer_right & given_gold,
    }


def score_mixture(
    answer_probs: torch.Tensor,
    mixture_probs: torch.Tensor,
    answer_labels: torch.Tensor,
    rationale_labels: torch.Tensor,
) -> dict[str, float]:
    """``answer_probs [N, 4]``, ``mixture_probs [N, 4]`` (the rationales given the answer
    mixture) -> ``qa2r_mixture``, ``q2ar_mixture``."""
    answer_right = answer_probs.argmax(-1) == answer_labels
    rationale_right = mixture_probs.argmax(-1) == rationale_labels
    return {
        "qa2r_mixture": rationale_right.float().mean().item(),
        "q2ar_mixture": (answer_right & rationale_right).float().mean().item(),
    }


def score_joint16(
    answer_probs: torch.Tensor,
    pair_scores: torch.Tensor,
    answer_labels: torch.Tensor,
    rationale_labels: torch.Tensor,
) -> dict[str, float]:
    """``answer_probs [N, 4]``, ``pair_scores [N, 4 answers, 4 rationales]``: one 16-way argmax
    picks (a, r) -> ``qa2r_joint16`` (r right), ``q2ar_joint16`` (both right),
    ``q2a_and_joint16`` (that, and the answer module's own argmax right)."""
    picked = pair_scores.flatten(1).argmax(-1)  # a * 4 + r
    rationale_right = picked % 4 == rationale_labels
    pair_right = (picked // 4 == answer_labels) & rationale_right
    answer_right = answer_probs.argmax(-1) == answer_labels
    return {
        "qa2r_joint16": rationale_right.float().mean().item(),
        "q2ar_joint16": pair_right.float().mean().item(),
        "q2a_and_joint16": (answer_right & pair_right).float().mean().item(),
    }


def write_csv(
    path: str | Path,
    annot_ids: list[str],
    answer_probs: torch.Tensor,
    rationale_probs: torch.Tensor,
) -> Path:
    """Write the 21-column CSV atomically."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for annot_id, a, r in zip(
            annot_ids, answer_probs.tolist(), rationale_probs.flatten(1).tolist()
        ):
            writer.writerow([annot_id, *(_cell(p) for p in a), *(_cell(p) for p in r)])
    return path


def _cell(p: float) -> str:
    """A probability with 9 significant digits: read back as float32, it is the same float32."""
    return f"{p:.9g}"


def read_csv(path: str | Path, sums: bool = True) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``(annot_ids, answer_probs [N, 4], rationale_probs [N, 4, 4])``; one-line errors naming
    the line: every cell a probability in [0, 1] (no NaN, no infinity), and with ``sums`` each
    row's 4 answers and each of its 4 groups of 4 rationales summing to 1 (``SUM_TOLERANCE``),
    as the leaderboard requires (``sums=False``: magnitudes only, for tests of the format)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        ids, values = _read_rows(path, sums)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    table = torch.tensor(values, dtype=torch.float64).reshape(len(ids), 20)
    return ids, table[:, :4], table[:, 4:].reshape(len(ids), 4, 4)


def _read_rows(path: Path, sums: bool) -> tuple[list[str], list[list[float]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != COLUMNS:
            raise InputError(
                f"{path}:1: expected the 21 leaderboard columns "
                f"annot_id, answer_0..3, rationale_conditioned_on_a0_0..a3_3"
            )
        ids, values = [], []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(COLUMNS):
                raise InputError(f"{path}:{number}: expected 21 columns, got {len(row)}")
            try:
                cells = [float(v) for v in row[1:]]
            except ValueError:
                raise InputError(f"{path}:{number}: a probability is not a number") from None
            for column, p in zip(COLUMNS[1:], cells):
                if not 0.0 <= p <= 1.0:  # NaN too
                    raise InputError(
                        f"{path}:{number}: {column}: {p!r} is not a probability in [0, 1]"
                    )
            if sums:
                _check_sums(path, number, cells)
            values.append(cells)
            ids.append(row[0])
    return ids, values


def _check_sums(path: Path, number: int, cells: list[float]) -> None:
    """Answers, then the rationales given each answer: each 4 probabilities summing to 1."""
    groups = [("answer_0..3", cells[:4])] + [
        (f"rationale_conditioned_on_a{i}_0..3", cells[4 + 4 * i : 8 + 4 * i]) for i in range(4)
    ]
    for name, group in groups:
        total = math.fsum(group)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise InputError(f"{path}:{number}: {name} sum to {total:.6g}, not 1")


def score_csv(path: str | Path, items: Sequence[VCRItem]) -> dict[str, float]:
    """``score`` of the leaderboard CSV at ``path`` against the labels of a split's ``items``
    (its rows matched by annot_id, ``rows_for``): the CLI's ``evaluate``. Items without labels
    (a test split) are an ``InputError`` naming the CSV; the caller names the split."""
    if items and items[0].answer_label is None:
        raise InputError(f"{path}: the split has no labels to score against")
    ids, answers, rationales = read_csv(path)
    rows = rows_for(path, ids, [it.annot_id for it in items])
    return score(
        answers[rows],
        rationales[rows],
        torch.tensor([it.answer_label for it in items]),
        torch.tensor([it.rationale_label for it in items]),
    )


def rows_for(path: str | Path, ids: list[str], expected: list[str]) -> torch.Tensor:
    """The CSV rows (``read_csv``'s ``ids``, from ``path``) of the ``expected`` annot_ids, in
    ``expected``'s order: a LongTensor ``[len(expected)]`` of row indices. One-line errors for an
    id that repeats, an expected id with no row and a row whose id is not expected; line numbers
    count the header as line 1."""
    by_id = _unique_rows(path, ids)
    missing = [annot_id for annot_id in expected if annot_id not in by_id]
    if missing:
        raise InputError(
            f"{path}: no row for {missing[0]} ({len(missing)} of {len(expected)} items missing)"
        )
    wanted = set(expected)
    extra = [i for i, annot_id in enumerate(ids) if annot_id not in wanted]
    if extra:
        raise InputError(
            f"{path}:{extra[0] + 2}: annot_id {ids[extra[0]]} is not in the split "
            f"({len(extra)} of {len(ids)} rows are not)"
        )
    return torch.tensor([by_id[annot_id] for annot_id in expected], dtype=torch.long)


def _unique_rows(path: str | Path, ids: list[str]) -> dict[str, int]:
    """annot_id -> its row index; an id on two rows is an error (the CSV's line 2 is row 0)."""
    by_id: dict[str, int] = {}
    for i, annot_id in enumerate(ids):
        if annot_id in by_id:
            raise InputError(
                f"{path}:{i + 2}: annot_id {annot_id} repeats line {by_id[annot_id] + 2}"
            )
        by_id[annot_id] = i
    return by_id
