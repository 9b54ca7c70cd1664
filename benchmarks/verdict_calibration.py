"""The verdict's statistics on recorded predictions (issue 28): how often two labels of one
configuration are called different (the false-positive rate), and how often a planted
difference is found (the power).

The recordings: val Q->AR question by question (``val_q2ar_right``, 300 questions) of R2C on the
built-in data, 5 seeds with a plain shuffle and 5 with noisy length buckets
(``docs/measurements/synthetic_results_r2c_plain5.json`` and ``_buckets5.json``, written by
``benchmarks/synthetic_results.py``).

- **Null**: each repetition splits the 5 plain-shuffle seeds at random into "A" (2 seeds) and
  "B" (3 seeds) and keeps a random half of the questions (150): one configuration under two
  labels. A false positive is a verdict other than "no difference shown" (``verdict.judge``: p
  below 0.05 and the interval leaving out 0; one pair, so Holm changes nothing).
- **Planted**: the same draws, B's seeds given a planted gain: a random ``--plant`` share of the
  questions made right in every seed of B (where wrong): found when the verdict says B > A.
- **Recorded**: plain shuffle against noisy buckets, 5 seeds each, all 300 questions.

    python -m benchmarks.verdict_calibration --repetitions 200 \\
        --json docs/measurements/verdict_calibration.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from study.reports.verdict import NO_DIFFERENCE, compare, judge

MEASUREMENTS = Path(__file__).resolve().parents[1] / "docs" / "measurements"


def recorded(name: str, approach: str = "R2C") -> np.ndarray:
    """``[seeds, questions]`` 0/1 of one recording's ``approach``."""
    runs = json.loads((MEASUREMENTS / name).read_text())["runs"]
    bits = [r["val_q2ar_right"] for r in runs if r["approach"] == approach]
    return np.array([[int(c) for c in b] for b in bits], dtype=np.float64)


def shown(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> str:
    return judge([compare(a, b, ("A", "B"), resamples, seed)])[0].verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--plant", type=float, nargs="+", default=[0.05, 0.10])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    plain, buckets = (
        recorded("synthetic_results_r2c_plain5.json"),
        recorded("synthetic_results_r2c_buckets5.json"),
    )
    rng = np.random.default_rng(0)
    false_positive, found = 0, dict.fromkeys(args.plant, 0)
    for repetition in range(args.repetitions):
        seeds = rng.permutation(len(plain))
        questions = rng.choice(plain.shape[1], plain.shape[1] // 2, replace=False)
        a, b = plain[seeds[:2]][:, questions], plain[seeds[2:]][:, questions]
        false_positive += shown(a, b, args.resamples, repetition) != NO_DIFFERENCE
        for share in args.plant:
            planted = rng.random(b.shape[1]) < share
            gained = np.where(planted[None, :], 1.0, b)
            found[share] += shown(a, gained, args.resamples, repetition) == "B > A"
    pair = judge([compare(buckets, plain, ("noisy buckets", "plain shuffle"))])[0]
    result = {
        "command": "python -m benchmarks.verdict_calibration " + " ".join(sys.argv[1:]),
        "repetitions": args.repetitions,
        "resamples": args.resamples,
        "null": {
            "what": "R2C plain shuffle, a random 2/3 split of its 5 seeds, a random 150 of 300 "
            "questions",
            "false_positive_rate": false_positive / args.repetitions,
        },
        "planted": {
            f"{share:.2f} of the questions made right in B": found[share] / args.repetitions
            for share in args.plant
        },
        "recorded": {
            "pair": "R2C noisy buckets (5 seeds) vs plain shuffle (5 seeds), 300 questions",
            "difference": round(pair.difference, 4),
            "interval": [round(pair.low, 4), round(pair.high, 4)],
            "p": round(pair.p, 4),
            "p_a_beats_b": pair.p_a_beats_b,
            "verdict": pair.verdict,
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
