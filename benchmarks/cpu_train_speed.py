"""Training speed of ``vcrnet.train.fit`` on the built-in data, per method: items/s per epoch, wall
time and the process's peak RSS. Runs on whichever ``vcrnet`` is imported, so the same script
times two versions side by side (an older checkout first on ``PYTHONPATH``).

    VCR_STUDY_HOME=/tmp/home13 .venv/bin/python -m benchmarks.cpu_train_speed now softmax,teacher
    cd /tmp/old && VCR_STUDY_HOME=/tmp/home13 PYTHONPATH=/tmp/old \\
        /path/to/.venv/bin/python /path/to/benchmarks/cpu_train_speed.py before softmax,teacher
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time

from study.inputs import resolve
from vcrnet.config import TrainConfig
from vcrnet.features import CachedVCRDataset, FeatureChoice
from vcrnet.train import fit


def main() -> None:
    label, methods = sys.argv[1], sys.argv[2].split(",")
    found = resolve(None, None, FeatureChoice(), ("train", "val"), progress=False)
    train, val = (CachedVCRDataset(found.splits[s]) for s in ("train", "val"))
    report: dict = {}
    with tempfile.TemporaryDirectory() as runs:
        for method in methods:
            config = TrainConfig(
                method=method, preset="small", lr=1e-3, batch_size=16, epochs=2, seed=0
            )
            started = time.perf_counter()
            history = fit(config, train, val, f"{runs}/{method}")
            report[method] = {
                "wall_s": round(time.perf_counter() - started, 1),
                "train_items_per_s": [round(m["train_items_per_s"], 1) for m in history],
                "val_q2ar": [round(m["val_q2ar"], 3) for m in history],
            }
    report["max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps({label: report}))


if __name__ == "__main__":
    main()
