"""Finals in parallel (issue 28): K seeds x A approaches with C concurrent trials should take
about ceil(K*A/C) trial-times, not K*A.

Two identical searches (a two-row grid, one trial each, the same seed) in a fresh home, then
``vcr-study finals`` of each: one with ``--concurrent 1``, one with ``--concurrent C``, the same
finals trials (same configurations, same seeds). For each: the wall time of the finals command,
the mean wall time of one finals trial (its MLflow run's start to end), and the ratio of the two
(trial-times taken); beside it ceil(K*A/C). Every command is a real ``vcr-study`` process.

    python -m benchmarks.finals_parallel --seeds 3 --concurrent 2 \\
        --json docs/measurements/finals_parallel.json

Run it alone: two torch processes on 2 cores slow each other down, which is what is measured
here at C=2, and anything else running would add to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = """\
description: two approaches for the finals benchmark
fixed: {{epochs: {epochs}, batch_size: 16, preset: small, patience: 100}}
trials:
  - {{label: R2C, method: teacher, correct_answer_rate: 1.0}}
  - {{method: softmax}}
"""


def vcr_study(home: Path, *args: str) -> float:
    """Run ``vcr-study ARGS`` in ``home``; its wall seconds (a failure stops the benchmark)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "study.cli", *map(str, args)],
        env={**os.environ, "VCR_STUDY_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"vcr-study {' '.join(map(str, args))}: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def trial_seconds(home: Path, name: str) -> list[float]:
    """Each finals run's wall seconds, start to end, as MLflow recorded them."""
    os.environ["VCR_STUDY_HOME"] = str(home)
    from mlflow.tracking import MlflowClient

    from study import store
    from study.tracking import finals_runs

    options, parent = store.load(name)
    client = MlflowClient(store.tracking_uri(options))
    runs = finals_runs(client, parent)
    spans = []
    for run_id in runs["run_id"]:
        info = client.get_run(run_id).info
        spans.append((info.end_time - info.start_time) / 1000)
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=600, help="synthetic training questions")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's home")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="finals-parallel-"))
    try:
        data, space = home / "vcr", home / "two.yaml"
        space.write_text(GRID.format(epochs=args.epochs))
        vcr_study(home, "data", "synth", "--out", data, "--train", args.train, "--val", 150,
                  "--test", 150)  # fmt: skip
        common = ("--space", space, "--data", data, "--image-size", "256x128")
        for name in ("c1", f"c{args.concurrent}"):
            vcr_study(home, "launch", "--name", name, *common, "--concurrent", 2)
        rows = []
        for concurrent in (1, args.concurrent):
            name = f"c{concurrent}"
            wall = vcr_study(
                home, "finals", "--name", name, "--seeds", args.seeds,
                "--concurrent", concurrent,
            )  # fmt: skip
            spans = trial_seconds(home, name)
            trial = statistics.fmean(spans)
            rows.append(
                {
                    "concurrent": concurrent,
                    "trials": len(spans),
                    "finals_wall_s": round(wall, 1),
                    "trial_s_mean": round(trial, 1),
                    "trial_s_min": round(min(spans), 1),
                    "trial_s_max": round(max(spans), 1),
                    "trial_times_taken": round(wall / trial, 2),
                    "ceil_KA_over_C": math.ceil(len(spans) / concurrent),
                }
            )
            print(json.dumps(rows[-1]))
        result = {
            "command": "python -m benchmarks.finals_parallel " + " ".join(sys.argv[1:]),
            "machine": f"{os.cpu_count()} CPUs, no GPU",
            "approaches": 2,
            "seeds": args.seeds,
            "epochs": args.epochs,
            "train_questions": args.train,
            "rows": rows,
            "speedup": round(rows[0]["finals_wall_s"] / rows[1]["finals_wall_s"], 2),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
