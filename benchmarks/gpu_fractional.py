"""1, 2 and 4 trials at once on one GPU (what ``--gpus-per-trial 1, 0.5, 0.25`` packs): the
aggregate training items per second of each.

Ray's fractional GPUs are bookkeeping: a trial of ``--gpus-per-trial 0.25`` is a process that sees
the whole GPU, next to three others. This script starts the same processes itself (Ray is not
installed on the lent GPU machine, which reaches no package index), each limited to its share of
the GPU's memory, training the ``r2c`` preset on batches shaped like VCR with BERT-base features
(as ``gpu_train_speed.py``). All start timing together, train for ``--seconds``, and report
their items; the aggregate is their sum over the window. Prints JSON and writes it to $OUT.

    python benchmarks/gpu_fractional.py --method softmax --seconds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu_train_speed import B, random_batch, training_step  # noqa: E402


def trial(rank: int, share: float, method: str, seconds: float, start, results) -> None:
    torch.set_num_threads(2)  # --cpus-per-trial 2
    torch.cuda.set_per_process_memory_fraction(share)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda")
    torch.manual_seed(rank)
    step = training_step(method, random_batch(device), device)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start.wait()  # every trial warmed up: the window opens for all at once
    began, steps = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        step()
        steps += 1
    torch.cuda.synchronize()
    results.put({"rank": rank, "items": steps * B, "seconds": time.perf_counter() - began,
                 "peak_gib": torch.cuda.max_memory_allocated() / 2**30})


def run(n: int, method: str, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=trial, args=(r, 1.0 / n, method, seconds, start, results))
             for r in range(n)]
    for p in procs:
        p.start()
    out = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    window = max(o["seconds"] for o in out)
    return {"trials": n, "gpus_per_trial": 1.0 / n,
            "aggregate_items_per_s": round(sum(o["items"] for o in out) / window, 1),
            "per_trial_items_per_s": [round(o["items"] / o["seconds"], 1) for o in out],
            "peak_gpu_memory_gib_per_trial": round(max(o["peak_gib"] for o in out), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="softmax")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "method": args.method, "preset": "r2c", "batch": B, "seconds": args.seconds,
              "runs": []}
    for n in (1, 2, 4):
        report["runs"].append(run(n, args.method, args.seconds))
        print(json.dumps(report["runs"][-1]), flush=True)
    one = report["runs"][0]["aggregate_items_per_s"]
    report["speedup"] = {str(r["trials"]): round(r["aggregate_items_per_s"] / one, 2)
                         for r in report["runs"]}
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_fractional.json").write_text(text)


if __name__ == "__main__":
    main()
