"""int8 storage's error on rows with outlier dimensions (issue 27, part 5; docs/features.md).

``--feature-storage int8`` scales each row by its largest magnitude (``cache.quantize``). BERT's
hidden states are reported to have a few dimensions far larger than the rest (the literature's
"outlier dimensions"; BERT-base is not here to measure, no download at run time): such a
dimension sets the whole row's scale, and the other dimensions keep fewer levels. Measured here:

1. the offline encoder's own rows (the built-in data's text entry, MiniLM): how far its largest
   dimension stands above the rest, and the error per-row int8 leaves;
2. the same rows with outliers planted: ``--outlier-dims`` dimensions (the same ones in every row,
   as in BERT) set to ``k`` times the row's RMS, for each ``k`` of ``--ratios``;

for each, the relative error (norm of the error over the norm of the row, mean over rows) over
the whole row and over its ordinary dimensions alone, with per-row scales (the cache's) and, for
comparison, per-dimension scales (one scale a dimension, its largest magnitude over the rows).

    python -m benchmarks.int8_outliers --json docs/measurements/int8_outliers.json
    python -m benchmarks.int8_outliers --entry CACHE/train-text-<fp>   # your encoder's rows
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from study.inputs import resolve
from vcrnet.features import FeatureChoice, cache


def relative_error(rows: np.ndarray, restored: np.ndarray, dims: np.ndarray) -> float:
    error = np.linalg.norm((restored - rows)[:, dims], axis=1)
    return float(np.mean(error / np.maximum(np.linalg.norm(rows[:, dims], axis=1), 1e-12)))


def per_dimension(rows: np.ndarray) -> np.ndarray:
    scale = np.abs(rows).max(axis=0) / 127
    codes = np.rint(np.divide(rows, scale, out=np.zeros_like(rows), where=scale > 0))
    return codes * scale


def errors(rows: np.ndarray, outliers: np.ndarray) -> dict:
    codes, scales = cache.quantize(rows.copy())  # it rounds a float32 array in place
    by_row = codes.astype(np.float32) * scales[:, None]
    by_dim = per_dimension(rows)
    ordinary = np.setdiff1d(np.arange(rows.shape[1]), outliers)
    everything = np.arange(rows.shape[1])
    magnitude = np.abs(rows)
    largest = np.bincount(magnitude.argmax(axis=1), minlength=rows.shape[1])
    return {
        "largest_over_rms": float(np.mean(magnitude.max(axis=1) / np.sqrt((rows**2).mean(axis=1)))),
        # the dimension most often the row's largest, and in what share of the rows
        "usual_largest_dim": int(largest.argmax()),
        "usual_largest_share": float(largest.max() / len(rows)),
        "per_row_scale": {
            "whole_row": relative_error(rows, by_row, everything),
            "ordinary_dims": relative_error(rows, by_row, ordinary),
        },
        "per_dimension_scale": {
            "whole_row": relative_error(rows, by_dim, everything),
            "ordinary_dims": relative_error(rows, by_dim, ordinary),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--outlier-dims", type=int, default=2)
    parser.add_argument("--ratios", type=float, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--entry", type=Path, help="a float16 text entry (e.g. BERT's) [the built-in data's]"
    )
    args = parser.parse_args()
    entry = args.entry or resolve(None, None, FeatureChoice(), ("train",)).splits["train"].text
    text = cache.open_rows(entry, "features")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(text), size=min(args.rows, len(text)), replace=False))
    rows = np.asarray(text[pick], dtype=np.float32)
    dims = rng.choice(rows.shape[1], size=args.outlier_dims, replace=False)
    report = {"encoder_rows": len(rows), "dim": rows.shape[1], "outlier_dims": dims.tolist()}
    report["as_encoded"] = errors(rows, np.array([], dtype=np.int64))
    rms = np.sqrt((rows**2).mean(axis=1, keepdims=True))
    for k in args.ratios:
        planted = rows.copy()
        planted[:, dims] = k * rms * np.sign(rows[:, dims] + 1e-12)
        report[f"outliers_{k:g}x_rms"] = errors(planted, dims)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
