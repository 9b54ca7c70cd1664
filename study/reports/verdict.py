"""The verdict's statistics: does approach A beat approach B, given several seeds of each?

What is compared is one reading (e.g. val Q->AR) question by question: for each approach an array
``right [seeds, questions]`` of 0/1 (or any per-question score), one row per seed of its final
configuration, the columns the same val questions for every approach. An approach's score is the
mean over its seeds and the questions.

- **The difference** of two approaches' scores, with a 95% interval from a **paired bootstrap
  that resamples both questions and seeds** (Dror et al., ACL 2018, for the questions; Bouthillier
  et al., MLSys 2021, for seeds as a source of variance): each resample draws the questions with
  replacement, the same draw for both approaches (paired by question), and each approach's seeds
  with replacement, its own draw (seeds are not paired across approaches). The interval is the
  resamples' 2.5th and 97.5th percentiles.
- **A p-value** for "no difference", two-sided, from the same resamples centred on the observed
  difference (how often a resample lies as far from it as it lies from zero).
- **Holm's correction** over all the pairs a study judges (``holm``), so that "A > B" is said for
  a pair only at a family-wise error rate of ``alpha``.
- **P(A beats B on a random seed)**: of every (seed of A, seed of B) pair, the share where A's
  score is higher, ties counting half (Bouthillier et al.'s probability of outperforming).

One seed an approach: the interval holds the questions' variance only, and ``note`` says so. The
resampling is numpy's (``scipy.stats.bootstrap`` resamples one axis; this needs two).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

RESAMPLES = 10_000
ALPHA = 0.05
NO_DIFFERENCE = "no difference shown at this budget"
CHUNK_CELLS = 10_000_000  # resamples x questions computed at once (~80 MB of float64)


@dataclass(frozen=True)
class Comparison:
    """One pair: ``a`` against ``b`` (names), their scores, the difference ``a - b`` and its
    interval, the p-value (``holm_p`` once corrected over the study's pairs), the probability
    that ``a`` beats ``b`` on a random seed, and what to say."""

    a: str
    b: str
    score_a: float
    score_b: float
    difference: float
    low: float
    high: float
    p: float
    holm_p: float
    p_a_beats_b: float
    seeds_a: int
    seeds_b: int
    verdict: str = NO_DIFFERENCE
    note: str = ""


def compare(
    a: np.ndarray,
    b: np.ndarray,
    names: tuple[str, str] = ("A", "B"),
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """``a [seeds_a, questions]`` against ``b [seeds_b, questions]`` (the same questions, in
    the same order): the difference of their mean scores, its 95% paired bootstrap interval over
    questions and seeds, its two-sided p-value and the probability of outperforming. ``holm_p``
    is ``p`` until ``judge`` corrects it."""
    a, b = _checked(a, "a"), _checked(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} questions, b {b.shape[1]}: the same are needed")
    observed = float(a.mean() - b.mean())
    deltas = _resampled_differences(a, b, resamples, np.random.default_rng(seed))
    low, high = np.percentile(deltas, [2.5, 97.5])
    far = np.abs(deltas - observed) >= abs(observed) - 1e-12
    p = float((1 + far.sum()) / (1 + resamples))
    per_seed_a, per_seed_b = a.mean(axis=1), b.mean(axis=1)
    wins = (per_seed_a[:, None] > per_seed_b[None, :]).mean()
    ties = (per_seed_a[:, None] == per_seed_b[None, :]).mean()
    one_seed = [n for n, s in zip(names, (a, b)) if len(s) == 1]
    note = (
        f"one seed of {' and '.join(one_seed)}: the interval holds the questions' variance "
        "only, not the seeds'"
        if one_seed
        else ""
    )
    return Comparison(
        a=names[0],
        b=names[1],
        score_a=float(a.mean()),
        score_b=float(b.mean()),
        difference=observed,
        low=float(low),
        high=float(high),
        p=p,
        holm_p=p,
        p_a_beats_b=float(wins + ties / 2),
        seeds_a=len(a),
        seeds_b=len(b),
        note=note,
    )


def compare_all(
    right: dict[str, np.ndarray], resamples: int = RESAMPLES, seed: int = 0, alpha: float = ALPHA
) -> list[Comparison]:
    """Every pair of approaches (``right``: name -> ``[seeds, questions]``), the better-scoring
    one first in each pair and the pairs in order of their scores, judged together (Holm)."""
    ranked = sorted(right, key=lambda name: -float(np.mean(right[name])))
    pairs = [
        compare(right[a], right[b], (a, b), resamples, seed)
        for a, b in itertools.combinations(ranked, 2)
    ]
    return judge(pairs, alpha)


COLUMNS = {
    "a": "A",
    "b": "B",
    "score_a": "A's mean",
    "score_b": "B's mean",
    "difference": "A - B",
    "low": "95% low",
    "high": "95% high",
    "p": "p",
    "holm_p": "p (Holm)",
    "p_a_beats_b": "P(A beats B on a seed)",
    "seeds_a": "seeds A",
    "seeds_b": "seeds B",
    "verdict": "verdict",
    "note": "note",
}


def verdict_table(pairs: list[Comparison]) -> pd.DataFrame:
    """One row a pair, ``COLUMNS``' headings (an empty table keeps them)."""
    rows = [{title: getattr(c, key) for key, title in COLUMNS.items()} for c in pairs]
    return pd.DataFrame(rows, columns=list(COLUMNS.values()))


def write_verdict(pairs: list[Comparison], out: Path, reading: str, approaches: int) -> list[Path]:
    """``verdict.csv`` and ``verdict.md`` (what the verdict means, then the pairs; one approach:
    no pair, said so), and the forest plot of the differences (``verdict_forest.png`` and
    ``.html``) under ``out``; returns the files written."""
    from study.reports.figures import forest_figure, forest_html, save_figure
    from study.reports.tables import write_table

    out.mkdir(parents=True, exist_ok=True)
    table = verdict_table(pairs)
    intro = (
        f"Verdict on {reading}: each pair's difference of the mean over seeds and questions, "
        "with a 95% paired bootstrap interval that resamples the questions (the same for both) "
        "and each approach's seeds; p two-sided, Holm-corrected over the "
        f'{len(pairs)} pair{"s" * (len(pairs) != 1)}; "A > B" where the corrected p is below '
        f'{ALPHA} and the interval leaves out 0, else "{NO_DIFFERENCE}". P(A beats B on a '
        "seed): of every pair of seeds, the share where A scores higher."
    )
    if approaches < 2:
        intro += f"\n\nOne approach ({approaches} with finals): no pair to judge."
    written = write_table(table, out / "verdict", intro)
    if pairs:
        written += save_figure(forest_figure(table, reading), out / "verdict_forest")
        written += forest_html(table, reading, out / "verdict_forest")
    return written


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest p times the
    number of hypotheses not yet rejected (m - i), made monotone, at most 1."""
    order = np.argsort(pvalues, kind="stable")
    m, adjusted, running = len(pvalues), [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def judge(pairs: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """The pairs with Holm-corrected p-values and their verdicts: "A > B" (or "B > A") where the
    corrected p is below ``alpha`` and the interval leaves out zero, else ``NO_DIFFERENCE``."""
    corrected = holm([c.p for c in pairs])
    judged = []
    for c, p in zip(pairs, corrected):
        shown = p < alpha and (c.low > 0 or c.high < 0)
        verdict = (f"{c.a} > {c.b}" if c.difference > 0 else f"{c.b} > {c.a}") if shown else None
        judged.append(
            Comparison(**{**c.__dict__, "holm_p": p, "verdict": verdict or NO_DIFFERENCE})
        )
    return judged


def _checked(scores: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"{name}: expected [seeds, questions] with at least one of each")
    return scores


def _resampled_differences(
    a: np.ndarray, b: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """``resamples`` bootstrap differences of the mean scores: questions drawn once per
    resample for both approaches, each approach's seeds drawn on their own. A resample's mean
    is ``sum_k n_k (w @ scores)[k] / questions``, ``n_k`` how often question k was drawn and
    ``w`` the share of each seed in the seeds drawn: no resampled copy of the arrays is made."""
    questions = a.shape[1]
    chunk = max(1, CHUNK_CELLS // questions)
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        counts = _counts(rng, r, questions, questions)  # [r, questions]
        means = []
        for scores in (a, b):
            seeds = len(scores)
            weights = _counts(rng, r, seeds, seeds) / seeds  # [r, seeds]
            means.append((counts * (weights @ scores)).sum(axis=1) / questions)
        out[start : start + r] = means[0] - means[1]
    return out


def _counts(rng: np.random.Generator, rows: int, draws: int, size: int) -> np.ndarray:
    """``[rows, size]``: how often each of ``size`` items is drawn in ``draws`` draws with
    replacement, a row a resample."""
    drawn = rng.integers(0, size, size=(rows, draws))
    offsets = np.arange(rows)[:, None] * size
    return np.bincount((drawn + offsets).ravel(), minlength=rows * size).reshape(rows, size)
