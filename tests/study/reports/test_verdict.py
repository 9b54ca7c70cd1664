"""The verdict's statistics on synthetic per-question results: how often it claims a difference
where there is none, how often it finds one that is there, and Holm's correction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.reports.verdict import (
    NO_DIFFERENCE,
    compare,
    compare_all,
    holm,
    judge,
    write_verdict,
)

QUESTIONS, SEEDS = 300, 3  # the built-in data's val split, the finals' default seeds


def finals(rng: np.random.Generator, difficulty: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """``[SEEDS, QUESTIONS]`` 0/1: each seed a model whose chance of getting question j right is
    its difficulty plus a seed effect (seeds differ by ~0.02 in accuracy, as docs/results.md
    measures) plus ``shift``."""
    seed_effect = rng.normal(0.0, 0.02, size=(SEEDS, 1))
    chance = np.clip(difficulty[None, :] + seed_effect + shift, 0.0, 1.0)
    return (rng.random((SEEDS, QUESTIONS)) < chance).astype(np.float64)


def test_the_same_configuration_under_two_labels_shows_no_difference_nearly_always():
    """200 repetitions of two approaches drawn from one distribution: "A > B" or "B > A" in at
    most 5% of them (the test's nominal level), plus a margin for 200 draws."""
    rng = np.random.default_rng(0)
    difficulty = rng.beta(2, 2, size=QUESTIONS)
    shown = 0
    for repetition in range(200):
        a, b = finals(rng, difficulty), finals(rng, difficulty)
        (c,) = judge([compare(a, b, resamples=1000, seed=repetition)])
        shown += c.verdict != NO_DIFFERENCE
    assert shown / 200 <= 0.08, shown


def test_a_planted_difference_is_found():
    """A 0.15 better in each question's chance (about the gap between the best and worst
    approaches on the built-in data): found in nearly every repetition, with the right sign."""
    rng = np.random.default_rng(1)
    difficulty = rng.beta(2, 2, size=QUESTIONS) * 0.8
    found = 0
    for repetition in range(50):
        a, b = finals(rng, difficulty, shift=0.15), finals(rng, difficulty)
        (c,) = judge([compare(a, b, ("A", "B"), resamples=1000, seed=repetition)])
        found += c.verdict == "A > B"
        assert c.low <= c.difference <= c.high
    assert found >= 48, found


def test_the_interval_and_the_probability_of_outperforming_read_as_they_should():
    a = np.array([[1, 1, 0, 1], [1, 0, 0, 1]], dtype=float)  # seeds 0.75 and 0.5
    b = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=float)  # 0.25, 0.25, 0
    c = compare(a, b, ("a", "b"), resamples=2000)
    assert c.difference == pytest.approx(0.625 - 1 / 6)
    assert c.score_a == pytest.approx(0.625) and c.seeds_a == 2 and c.seeds_b == 3
    assert c.p_a_beats_b == 1.0  # every seed of a above every seed of b
    assert c.low <= c.difference <= c.high and c.note == ""
    assert compare(b, a).p_a_beats_b == 0.0
    tied = compare(a[:1], a[:1])  # one seed each, the same answers
    assert tied.difference == 0 and tied.p_a_beats_b == 0.5 and tied.p == 1.0
    assert tied.note.startswith("one seed of A and B: the interval holds the questions'")


def test_holm_multiplies_by_the_hypotheses_left_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_judging_corrects_over_the_pairs():
    """A p of ~0.02 passes alone, not as one of three pairs (Holm: ~0.06)."""
    rng = np.random.default_rng(5)
    difficulty = rng.beta(2, 2, size=QUESTIONS)
    a, b = finals(rng, difficulty, shift=0.05), finals(rng, difficulty)
    c = compare(a, b, ("A", "B"), resamples=4000)
    assert 0.0167 < c.p < 0.05 and c.low > 0, c  # this draw: shown alone, not among three
    (alone,) = judge([c])
    assert alone.verdict == "A > B"
    same = compare(b, b, ("B", "B2"), resamples=100)
    judged = judge([c, same, same])
    assert judged[0].holm_p == pytest.approx(3 * c.p)
    assert [j.verdict for j in judged] == [NO_DIFFERENCE] * 3


def test_results_of_other_questions_are_refused():
    with pytest.raises(ValueError, match="a has 3 questions, b 4"):
        compare(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="expected \\[seeds, questions\\]"):
        compare(np.ones(3), np.ones((2, 3)))


def test_the_verdict_files_say_every_pair_and_draw_them(tmp_path):
    rng = np.random.default_rng(3)
    difficulty = rng.beta(2, 2, size=QUESTIONS) * 0.8
    right = {
        "softmax": finals(rng, difficulty, shift=0.15),
        "gumbel": finals(rng, difficulty),
        "teacher": finals(rng, difficulty),
    }
    pairs = compare_all(right, resamples=500)
    assert [(c.a, c.b) for c in pairs][0][0] == "softmax"  # the best-scoring first
    assert len(pairs) == 3 and {c.verdict for c in pairs if "softmax" in (c.a, c.b)} == {
        "softmax > gumbel",
        "softmax > teacher",
    }
    files = write_verdict(pairs, tmp_path, "val Q->AR", approaches=3)
    assert {p.name for p in files} == {
        "verdict.csv",
        "verdict.md",
        "verdict_forest.png",
        "verdict_forest.html",
    }
    table = pd.read_csv(tmp_path / "verdict.csv")
    assert list(table.columns[:3]) == ["A", "B", "A's mean"] and len(table) == 3
    assert "Holm-corrected over the 3 pairs" in (tmp_path / "verdict.md").read_text()
    one = write_verdict([], tmp_path / "one", "val Q->AR", approaches=1)
    assert [p.name for p in one] == ["verdict.csv", "verdict.md"]
    assert "no pair to judge" in (tmp_path / "one" / "verdict.md").read_text()
