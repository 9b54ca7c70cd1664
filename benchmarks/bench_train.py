"""Training items per second on this machine: each coupling, from the cache, against the per-item
R2C path (features computed for every item served, then the same training step), in one run.

    .venv/bin/python -m benchmarks.bench_train                 # built-in data, small preset
    .venv/bin/python -m benchmarks.bench_train --preset r2c --steps 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.bench_loader import per_item_rate
from study import inputs
from vcrnet.config import TrainConfig
from vcrnet.couplings import COUPLINGS
from vcrnet.features import CachedVCRDataset, FeatureChoice, collate
from vcrnet.train import build, train_step


def step_rate(method: str, batches: list[dict], preset: str) -> float:
    """Training items per second (forward, backward, clip, Adam) for one method."""
    config = TrainConfig(method=method, preset=preset)
    model, coupling = build(config, text_dim=batches[0]["question"].shape[-1])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_step(model, coupling, batches[0], optimizer, config)  # warm-up
    start = time.perf_counter()
    for batch in batches[1:]:
        train_step(model, coupling, batch, optimizer, config)
    return sum(len(b["index"]) for b in batches[1:]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per method")
    parser.add_argument("--per-item", type=int, default=30, help="items served the R2C way")
    args = parser.parse_args()
    found = inputs.resolve(None, None, FeatureChoice(), ("train",), progress=False)
    data, dataset = found.data, CachedVCRDataset(found.splits["train"])
    batches = [
        collate([dataset[(s * args.batch_size + i) % len(dataset)] for i in range(args.batch_size)])
        for s in range(args.steps + 1)
    ]

    rates = {m: step_rate(m, batches, args.preset) for m in COUPLINGS}
    # the cached path also pays for reading and padding its batches
    start = time.perf_counter()
    for s in range(args.steps):
        collate([dataset[(s * args.batch_size + i) % len(dataset)] for i in range(args.batch_size)])
    load_seconds_per_item = (time.perf_counter() - start) / (args.steps * args.batch_size)
    features_per_item = 1 / per_item_rate(data, "train", found.settings, args.per_item)
    report = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "methods": {},
    }
    for method, rate in rates.items():
        cached = 1 / (1 / rate + load_seconds_per_item)
        per_item = 1 / (1 / rate + features_per_item)
        report["methods"][method] = {
            "cached_items_per_s": round(cached, 1),
            "per_item_items_per_s": round(per_item, 2),
            "ratio": round(cached / per_item, 1),
            "step_cost_vs_softmax": round(rates["softmax"] / rate, 2),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
