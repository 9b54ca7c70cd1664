"""Feature extraction speed: one process, and local Ray with 1 and 2 extraction workers (one
thread each), on synthetic data in the VCR layout with the built-in feature settings (offline
MiniLM, random ResNet-50 at 384x192). Items/s of the train split, end to end (planning, actors
starting and loading their encoders, every shard written, the entries finished), and whether every
run's arrays equal the one-process run's (float16 tolerance).

    .venv/bin/python -m benchmarks.extract_speed --items 600 \\
        --out docs/measurements/extract_speed_cpu.json

Run it alone: two torch processes on 2 cores slow each other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from study import inputs
from study.inputs import Workers, on_ray
from vcrnet.data import write_synthetic
from vcrnet.features import CachedVCRDataset, extract_splits


def timed(data: Path, cache: Path, runner, args) -> tuple[float, CachedVCRDataset]:
    started = time.perf_counter()
    found = extract_splits(
        data,
        ("train",),
        cache,
        inputs.default_settings(builtin_data=True),
        progress=False,
        run=runner,
        shard_items=args.shard_items,
        shard_images=args.shard_images,
    )["train"]
    return time.perf_counter() - started, CachedVCRDataset(found)


def same(one: CachedVCRDataset, other: CachedVCRDataset) -> float:
    """The largest difference of any array (the features' to float16 tolerance)."""
    worst = 0.0
    for name, array in one.arrays.items():
        mine = np.asarray(array[:], dtype=np.float32)
        theirs = np.asarray(other.arrays[name][:], dtype=np.float32)
        worst = max(worst, float(np.abs(mine - theirs).max()) if mine.size else 0.0)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--shard-items", type=int, default=50)
    parser.add_argument("--shard-images", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="extract-speed-"))
    try:
        data = write_synthetic(
            root / "data", seed=11, sizes={"train": args.items, "val": 3, "test": 3}
        )
        torch.set_num_threads(1)  # one worker = one thread, in every run
        runs: dict = {}
        wall, one = timed(data, root / "one", None, args)
        runs["one process, 1 thread"] = {
            "wall_s": round(wall, 1),
            "items_per_s": round(args.items / wall, 2),
        }
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        for count in (1, 2):
            wall, found = timed(
                data, root / f"ray{count}", on_ray(Workers(count=count, gpus=0, cpus=1)), args
            )
            runs[f"local Ray, {count} worker(s)"] = {
                "wall_s": round(wall, 1),
                "items_per_s": round(args.items / wall, 2),
                "max_difference_to_one_process": same(one, found),
            }
        ray.shutdown()
        one_worker, two = (runs[f"local Ray, {n} worker(s)"]["items_per_s"] for n in (1, 2))
        report = {
            "items": args.items,
            "images": len(np.unique(one.images())),
            "shard_items": args.shard_items,
            "shard_images": args.shard_images,
            "cpus": os.cpu_count(),
            "runs": runs,
            "speedup_2_workers_over_1": round(two / one_worker, 2),
        }
        print(json.dumps(report, indent=2))
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
