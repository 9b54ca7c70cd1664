"""1, 2 and 4 trials at once on one GPU (what ``--gpus-per-trial 1, 0.5, 0.25`` packs): the
aggregate training items per second, end to end through the real training path.

Ray's fractional GPUs are bookkeeping: a trial of ``--gpus-per-trial 0.25`` is a process that sees
the whole GPU, next to three others. This script starts the same processes itself (Ray is not
installed on the lent GPU machine), each limited to its share of the GPU's memory and to 2 CPU
threads (``--cpus-per-trial 2``), each running ``vcrnet.train.train_epoch`` (packed gather in a
background thread, copies, padding on the GPU, the step) over its own ``--batches`` batches of a
VCR-shaped cache (``benchmarks/vcr_speed.py`` writes it, or reuses the one at ``--cache``). All
warm up, then start together; the aggregate is their items over the longest one's time. Run it
under CUDA MPS (``nvidia-cuda-mps-control -d`` first) and without. Prints JSON, writes it to
``--out`` or ``$OUT/gpu_fractional.json``.

    python benchmarks/gpu_fractional.py --method softmax --cache /tmp/vcr-speed
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import vcr_speed  # noqa: E402
from vcrnet.config import TrainConfig  # noqa: E402
from vcrnet.train import math_mode, train_epoch  # noqa: E402


def trial(rank: int, share: float, args: argparse.Namespace, start, results) -> None:
    torch.set_num_threads(2)
    torch.cuda.set_per_process_memory_fraction(share)
    math_mode(TrainConfig.tf32)  # training's default GPU math (TF32 off), as fit sets it
    device = torch.device("cuda")
    dataset = vcr_speed.make_dataset(args, args.cache)
    n = args.batches * args.batch_size
    mine = dataset.subset(np.random.default_rng(rank).permutation(len(dataset))[:n])
    config = TrainConfig(
        method=args.method, preset="r2c", batch_size=args.batch_size, num_samples=64, seed=rank
    )
    model, coupling, optimizer = vcr_speed.trainer(config, dataset.text_dim, device)
    train_epoch(model, coupling, mine.subset(np.arange(3 * args.batch_size)), optimizer, config, 0)
    torch.cuda.synchronize()
    start.wait()  # every trial warmed up: the window opens for all at once
    began = time.perf_counter()
    train_epoch(model, coupling, mine, optimizer, config, 1)
    torch.cuda.synchronize()
    results.put(
        {
            "rank": rank,
            "items": n,
            "seconds": time.perf_counter() - began,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
    )


def run(n: int, args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=trial, args=(r, 1.0 / n, args, start, results)) for r in range(n)]
    for p in procs:
        p.start()
    out = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    window = max(o["seconds"] for o in out)
    return {
        "trials": n,
        "gpus_per_trial": 1.0 / n,
        "aggregate_items_per_s": round(sum(o["items"] for o in out) / window, 1),
        "per_trial_items_per_s": [round(o["items"] / o["seconds"], 1) for o in out],
        "peak_gpu_memory_gib_per_trial": round(max(o["peak_gib"] for o in out), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="softmax")
    parser.add_argument("--trials", default="1,2,4")
    parser.add_argument("--label", default="", help="e.g. 'mps': kept in the report")
    cache_args = vcr_speed.parse_args(["--batches", "40"])  # the cache's shape, as vcr_speed's
    for key in ("questions", "dim", "batch_size", "batches", "seed"):
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=getattr(cache_args, key)
        )
    parser.add_argument(
        "--cache",
        type=Path,
        required=True,
        help="the VCR-shaped cache's folder (written if absent)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.lengths_from = None
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    vcr_speed.make_dataset(args, args.cache)  # once, before the trials read it
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "method": args.method,
        "preset": "r2c",
        "batch": args.batch_size,
        "label": args.label,
        "runs": [],
    }
    for n in map(int, args.trials.split(",")):
        report["runs"].append(run(n, args))
        print(json.dumps(report["runs"][-1]), flush=True)
    one = report["runs"][0]["aggregate_items_per_s"]
    report["speedup"] = {
        str(r["trials"]): round(r["aggregate_items_per_s"] / one, 2) for r in report["runs"]
    }
    text = json.dumps(report, indent=2)
    print(text)
    out = args.out or (
        Path(os.environ["OUT"], f"gpu_fractional{args.label}.json")
        if os.environ.get("OUT")
        else None
    )
    if out:
        out.write_text(text)


if __name__ == "__main__":
    main()
