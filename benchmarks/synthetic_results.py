"""The table of docs/results.md from finished `vcr-study train` runs.

For each run folder: the best epoch's validation metrics (from metrics.jsonl), and from its best
checkpoint the rationale module's QA->R given the gold answer and given a random wrong answer.

    python -m benchmarks.synthetic_results RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from study.builtin import split_features
from vcrnet.features import CachedVCRDataset
from vcrnet.train import BEST, METRICS, load_model, predict


def rationale_given(probs: torch.Tensor, answers: torch.Tensor, labels: torch.Tensor) -> float:
    rows = torch.arange(len(answers))
    return (probs[rows, answers].argmax(-1) == labels).float().mean().item()


def main(runs: list[str]) -> None:
    val = None
    print("| run | best epoch | Q->A | QA->R (gold) | QA->R (pred) | Q->AR | QA->R given a random "
          "wrong answer |")
    print("|---|---|---|---|---|---|---|")
    for run in map(Path, runs):
        history = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
        best = max(history, key=lambda m: m["val_q2ar"])
        model, config, saved = load_model(run / BEST)
        if val is None:
            _, found, _ = split_features(None, None, ("val",))
            val = CachedVCRDataset(found["val"])
        p = predict(model, val)
        wrong = (p.answer_labels + torch.randint(1, 4, p.answer_labels.shape,
                                                 generator=torch.Generator().manual_seed(0))) % 4
        given_wrong = rationale_given(p.rationale_probs, wrong, p.rationale_labels)
        print(f"| {run.name} | {best['epoch']} | {best['val_q2a']:.3f} | {best['val_qa2r']:.3f} "
              f"| {best['val_qa2r_pred']:.3f} | {best['val_q2ar']:.3f} | {given_wrong:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
