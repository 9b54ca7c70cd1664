"""Harness overhead: a study's wall time against its trials' own training time, and against the
same trials trained one after another in a plain loop (no Ray, no Optuna, no MLflow).

    VCR_STUDY_HOME=/tmp/bench .venv/bin/python -m benchmarks.study_overhead --trials 6

The study runs one trial at a time with every CPU (``--concurrent 1 --cpus-per-trial 2`` on the
2-core machine), so that its wall time and the plain loop's are comparable. A trial's own training
time is the sum of its epochs' ``epoch_seconds`` (training and validation, as vcrnet's ``fit``
measures them). The plain loop re-trains each trial's resolved config for the epochs it ran in
the study (ASHA may have stopped it early), with the same seeds, so it must reproduce the study's
validation metrics exactly: the script checks that too.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from study import inputs, store, tracking
from study.launch import launch
from study.store import LaunchOptions
from vcrnet.config import TrainConfig
from vcrnet.features import CachedVCRDataset, FeatureChoice
from vcrnet.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--space", default="default")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--name", default=time.strftime("overhead-%Y%m%d-%H%M%S"))
    parser.add_argument("--out", type=Path, default=Path("docs/measurements/study_overhead.json"))
    args = parser.parse_args()

    inputs.resolve(None, None, FeatureChoice(), ("train", "val"))  # cached before the clock
    options = LaunchOptions(
        name=args.name, space=args.space, trials=args.trials, concurrent=1, cpus_per_trial=args.cpus
    )
    start = time.perf_counter()
    launch(options)
    study_wall = time.perf_counter() - start

    client = MlflowClient(store.tracking_uri(options))
    runs = tracking.trial_runs(client, store.load(args.name).parent_run_id)
    runs = runs.sort_values("trial_id")
    trials = []
    for _, row in runs.iterrows():
        epoch_seconds = client.get_metric_history(row["run_id"], "epoch_seconds")
        q2ar = sorted(client.get_metric_history(row["run_id"], "val_q2ar"), key=lambda m: m.step)
        params = {
            k.removeprefix("params."): v
            for k, v in row.items()
            if k.startswith("params.") and isinstance(v, str)
        }
        config = TrainConfig.from_dict(params, where=f"trial {row['trial_id']}")
        trials.append(
            {
                "trial_id": row["trial_id"],
                "method": row["method"],
                "config": config.replace(epochs=len(q2ar)),
                "own_seconds": sum(m.value for m in epoch_seconds),
                "study_val_q2ar": [m.value for m in q2ar],
            }
        )

    torch.set_num_threads(args.cpus)
    found = inputs.for_study(options, ("train", "val"))
    start = time.perf_counter()
    train_set, val_set = (CachedVCRDataset(found.splits[s]) for s in ("train", "val"))
    loop_q2ar = []
    with tempfile.TemporaryDirectory(prefix="plain-loop-") as folder:
        for trial in trials:
            history = fit(trial["config"], train_set, val_set, Path(folder) / trial["trial_id"])
            loop_q2ar.append([m["val_q2ar"] for m in history])
    loop_wall = time.perf_counter() - start

    own = sum(t["own_seconds"] for t in trials)
    epochs = sum(t["config"].epochs for t in trials)
    same = all(
        abs(a - b) < 1e-6
        for t, loop in zip(trials, loop_q2ar)
        for a, b in zip(t["study_val_q2ar"], loop, strict=True)
    )
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "space": args.space,
        "trials": len(trials),
        "trial_epochs": epochs,
        "cpus": args.cpus,
        "study_wall_s": round(study_wall, 1),
        "trials_own_training_s": round(own, 1),
        "plain_loop_wall_s": round(loop_wall, 1),
        "overhead_vs_own_training": round((study_wall - own) / study_wall, 4),
        "overhead_vs_plain_loop": round((study_wall - loop_wall) / study_wall, 4),
        "plain_loop_reproduces_study_metrics": same,
        "trials_detail": [
            {
                "trial_id": t["trial_id"],
                "method": t["method"],
                "epochs": t["config"].epochs,
                "own_seconds": round(t["own_seconds"], 1),
                "val_q2ar": t["study_val_q2ar"],
            }
            for t in trials
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "trials_detail"}, indent=2))


if __name__ == "__main__":
    main()
