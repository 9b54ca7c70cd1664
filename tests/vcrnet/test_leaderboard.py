"""The leaderboard's scoring and CSV, and the paper's decodings, pinned to hand-made examples."""

from __future__ import annotations

import csv

import pytest
import torch

from vcrnet.errors import InputError
from vcrnet.leaderboard import read_csv, rows_for, score, score_joint16, score_mixture, write_csv

# 4 questions; gold answers and rationales
A_LABELS = torch.tensor([0, 1, 2, 3])
R_LABELS = torch.tensor([1, 1, 0, 2])


def _answers() -> torch.Tensor:
    """Predicted answers 0, 1, 0, 3: right, right, wrong, right."""
    return torch.tensor(
        [[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.4, 0.1, 0.3, 0.2], [0.1, 0.1, 0.1, 0.7]]
    )


def _rationales() -> torch.Tensor:
    """``[4, 4 answers, 4 rationales]``: rationale 3 everywhere except where set below."""
    r = torch.full((4, 4, 4), 0.1)
    r[:, :, 3] = 0.7
    r[0, 0] = torch.tensor([0.1, 0.7, 0.1, 0.1])  # q0 given gold a0: r1 (right)
    r[1, 1] = torch.tensor([0.1, 0.1, 0.1, 0.7])  # q1 given gold a1: r3 (wrong)
    r[2, 2] = torch.tensor([0.7, 0.1, 0.1, 0.1])  # q2 given gold a2: r0 (right)
    r[2, 0] = torch.tensor([0.1, 0.1, 0.1, 0.7])  # q2 given predicted a0: r3 (wrong)
    r[3, 3] = torch.tensor([0.1, 0.1, 0.7, 0.1])  # q3 given gold a3: r2 (right)
    return r


def test_score_by_hand():
    """Q->A right for q0, q1, q3; QA->R (gold) right for q0, q2, q3; given the predicted answer
    right for q0 and q3 (q2's predicted a0 gives r3); Q->AR: q0, q3."""
    got = score(_answers(), _rationales(), A_LABELS, R_LABELS)
    assert got == {"q2a": 0.75, "qa2r": 0.75, "qa2r_pred": 0.5, "q2ar": 0.5}


def test_paper_decodings_by_hand():
    mixture = torch.tensor(
        [[0.1, 0.6, 0.2, 0.1], [0.6, 0.2, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]]
    )  # r1, r0, r0, r3: right, wrong, right, wrong
    assert score_mixture(_answers(), mixture, A_LABELS, R_LABELS) == {
        "qa2r_mixture": 0.5,
        "q2ar_mixture": 0.25,
    }  # q2's answer is wrong: only q0 both
    pairs = torch.zeros(4, 4, 4)
    pairs[0, 0, 1] = 5  # (a0, r1): both right
    pairs[1, 2, 1] = 5  # (a2, r1): rationale right, answer wrong
    pairs[2, 2, 3] = 5  # (a2, r3): answer right, rationale wrong
    pairs[3, 3, 2] = 5  # (a3, r2): both right
    # the answer module alone: q0, q1, q3 right; only q0 and q3 are right both ways
    assert score_joint16(_answers(), pairs, A_LABELS, R_LABELS) == {
        "qa2r_joint16": 0.75,
        "q2ar_joint16": 0.5,
        "q2a_and_joint16": 0.5,
    }
    pairs[3, 3, 2], pairs[3, 0, 2] = 0, 5  # q3 now picks (a0, r2): rationale right only
    assert score_joint16(_answers(), pairs, A_LABELS, R_LABELS) == {
        "qa2r_joint16": 0.75,
        "q2ar_joint16": 0.25,
        "q2a_and_joint16": 0.25,
    }


def test_a_csv_cell_is_its_tensor_entry_to_the_last_float32_bit(tmp_path):
    torch.manual_seed(1)
    answers = torch.softmax(torch.randn(3, 4), -1)
    rationales = torch.softmax(torch.randn(3, 4, 4), -1)
    path = write_csv(tmp_path / "sub.csv", ["a", "b", "c"], answers, rationales)
    with path.open() as f:
        rows = list(csv.reader(f))
    header = rows[0]
    cell = rows[2][header.index("rationale_conditioned_on_a2_1")]  # item "b", answer 2, r 1
    assert torch.tensor(float(cell), dtype=torch.float32) == rationales[1, 2, 1]
    assert torch.tensor(float(rows[3][header.index("answer_3")])) == answers[2, 3]
    _, got_a, got_r = read_csv(path)
    assert torch.equal(got_a.float(), answers) and torch.equal(got_r.float(), rationales)


def test_near_ties_keep_their_argmax_through_the_csv(tmp_path):
    """Two probabilities one float32 step apart stay ordered (6 decimals would tie them)."""
    low = torch.tensor(0.3, dtype=torch.float32)
    high = torch.nextafter(low, torch.tensor(1.0))
    answers = torch.stack([low, high, 0.2 * torch.ones(()), 1 - low - high - 0.2]).unsqueeze(0)
    rationales = torch.full((1, 4, 4), 0.25)
    _, got_a, _ = read_csv(write_csv(tmp_path / "t.csv", ["x"], answers, rationales))
    assert got_a.argmax(-1).item() == 1 == answers.argmax(-1).item()
    assert score(got_a, rationales.double(), torch.tensor([1]), torch.tensor([0]))["q2a"] == 1


def _csv_with_ids(tmp_path, ids):
    """A leaderboard CSV whose rows carry ``ids`` (uniform probabilities), and its ids read back."""
    n = len(ids)
    path = write_csv(tmp_path / "p.csv", ids, torch.full((n, 4), 0.25), torch.full((n, 4, 4), 0.25))
    return path, read_csv(path)[0]


def test_rows_for_follows_the_splits_order(tmp_path):
    path, ids = _csv_with_ids(tmp_path, ["c", "a", "b"])
    rows = rows_for(path, ids, ["a", "b", "c"])
    assert rows.dtype == torch.long and rows.tolist() == [1, 2, 0]


def test_a_repeated_annot_id_names_both_lines(tmp_path):
    path, ids = _csv_with_ids(tmp_path, ["a", "b", "a", "c"])
    with pytest.raises(InputError) as err:
        rows_for(path, ids, ["a", "b", "c"])
    assert str(err.value) == f"{path}:4: annot_id a repeats line 2"


def test_a_missing_annot_id_is_named_with_the_count(tmp_path):
    path, ids = _csv_with_ids(tmp_path, ["a"])
    with pytest.raises(InputError) as err:
        rows_for(path, ids, ["a", "b", "c"])
    assert str(err.value) == f"{path}: no row for b (2 of 3 items missing)"


def test_an_annot_id_not_in_the_split_names_its_line(tmp_path):
    path, ids = _csv_with_ids(tmp_path, ["a", "b", "xyz", "c"])
    with pytest.raises(InputError) as err:
        rows_for(path, ids, ["a", "b", "c"])
    assert str(err.value) == f"{path}:4: annot_id xyz is not in the split (1 of 4 rows are not)"


def test_every_float32_magnitude_round_trips_bit_for_bit(tmp_path):
    """Probabilities from 1e-38 to 1 and their float32 neighbours (they differ past the 7th
    digit) come back as the same float32 bits."""
    torch.manual_seed(2)
    base = torch.rand(64) * torch.logspace(-38, 0, 64)
    values = torch.stack([base, torch.nextafter(base, torch.ones(64))], 1).flatten()  # [128]
    answers = values.reshape(32, 4)
    written = write_csv(
        tmp_path / "m.csv", [str(i) for i in range(32)], answers, torch.full((32, 4, 4), 0.25)
    )
    _, got, _ = read_csv(written, sums=False)  # magnitudes, not probabilities that sum to 1
    assert torch.equal(got.float().view(torch.int32), answers.view(torch.int32))
