"""What the training batches hold, for each way of drawing them (issue 27, part 3).

On the built-in data's training part (the dev split carved off, as ``fit`` does), for several
seeds: the share of batches whose items are all of one question type (``vcrnet.data.synth``'s
types), the share of the pairs of items batched together in one epoch that the next epoch batches
together again (``vcrnet.features.batches.composition``), and the padded text rows per item (what
length buckets save). No training: the batches only.

    python -m benchmarks.batch_composition --seeds 0 1 2 3 4 \\
        --json docs/measurements/batch_composition.json

With ``--vcr-shape N``: N questions drawn around VCR's word counts (``benchmarks.vcr_speed``'s
model of them, not VCR itself), batches of 96 as R2C: the padding and the pairs only (no types).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from study.inputs import resolve
from vcrnet.config import TrainConfig
from vcrnet.data import read_split
from vcrnet.data.synth import question_type
from vcrnet.features import CachedVCRDataset, FeatureChoice, dev_split
from vcrnet.features.batches import composition, epoch_order, item_sizes, padded_text_rows

SAMPLERS = {  # label -> (bucket_batches, noise)
    "plain shuffle": (0, 0.0),
    "length buckets of 50 batches (before: no noise)": (50, 0.0),
    "noisy buckets, noise 0.1 (bucket_batches=50 now)": (50, 0.1),
    "noisy buckets, noise 0.25": (50, 0.25),
    "noisy buckets, noise 0.5": (50, 0.5),
}


def measure(
    train: CachedVCRDataset, kinds: np.ndarray, batch_size: int, seeds: list[int]
) -> list[dict]:
    sizes, index = item_sizes(train), np.asarray(train.arrays["index"][train.items])
    return measure_shape(sizes, index, batch_size, seeds, kinds)


def measure_shape(
    sizes: np.ndarray,
    index: np.ndarray,
    batch_size: int,
    seeds: list[int],
    kinds: np.ndarray | None = None,
) -> list[dict]:
    kinds = np.zeros(len(sizes)) if kinds is None else kinds  # one group: single_group is 100%
    rows = []
    for label, (buckets, noise) in SAMPLERS.items():
        for seed in seeds:
            first, second = (
                epoch_order(sizes, batch_size, seed * 100_003 + e, buckets, noise) for e in (0, 1)
            )
            padded = sum(padded_text_rows(index[b], None) * len(b) for b in first)
            rows.append(
                {
                    "sampler": label,
                    "bucket_batches": buckets,
                    "noise": noise,
                    "seed": seed,
                    **composition(first, second, kinds),
                    "padded_rows_per_item": float(padded / len(sizes)),
                }
            )
    return rows


def vcr_shape(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, index [n, 20, 3])`` of n questions with VCR-like word counts: pair i < 4 the
    question and answer i, pair 4 + 4a + r the question and answer a, then rationale r."""
    from benchmarks.vcr_speed import vcr_lengths

    lengths = vcr_lengths(n, np.random.default_rng(seed))
    q, a, r = lengths["question"], lengths["answer"], lengths["rationale"]
    index = np.zeros((n, 20, 3), dtype=np.int64)
    index[:, :4, 1], index[:, :4, 2] = q[:, None], a
    index[:, 4:, 1] = np.repeat(q[:, None] + a, 4, axis=1)
    index[:, 4:, 2] = np.tile(r, (1, 4))
    return padded_text_rows(index, axis=1), index


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| sampler | batches of one question type | pairs batched together again "
        "| padded text rows per item |",
        "|---|---|---|---|",
    ]
    for label in dict.fromkeys(r["sampler"] for r in rows):
        mine = [r for r in rows if r["sampler"] == label]
        cells = []
        for key, scale in (
            ("single_group", 100),
            ("together_again", 100),
            ("padded_rows_per_item", 1),
        ):
            values = [r[key] * scale for r in mine]
            unit = "%" if scale == 100 else ""
            cells.append(f"{statistics.fmean(values):.1f}{unit} ± {statistics.stdev(values):.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--batch-size", type=int, default=16)  # docs/results.md's
    parser.add_argument("--json", type=Path)
    parser.add_argument("--vcr-shape", type=int, default=0, help="N VCR-like questions instead")
    args = parser.parse_args()
    if args.vcr_shape:
        rows = measure_shape(*vcr_shape(args.vcr_shape), 96, args.seeds)
        print("\n".join(table(rows)))
        if args.json:
            args.json.write_text(json.dumps({"batch_size": 96, "runs": rows}, indent=1))
        return
    found = resolve(None, None, FeatureChoice(), ("train",))
    whole = CachedVCRDataset(found.splits["train"])
    defaults = TrainConfig()
    train, _ = dev_split(whole, defaults.dev_fraction, defaults.dev_seed)
    kind_of = {
        item.annot_id: question_type(item.question) for item in read_split(found.data, "train")
    }
    kinds = np.array([kind_of[i] for i in train.annot_ids])
    rows = measure(train, kinds, args.batch_size, args.seeds)
    print("\n".join(table(rows)))
    if args.json:
        args.json.write_text(
            json.dumps({"batch_size": args.batch_size, "items": len(train), "runs": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
