"""What the default study costs and leaves behind: its ``--dry-run`` estimate against its measured
wall time, and the disk it leaves (the results home besides the data and the feature cache, and
Ray's session folder; of it, each approach's best weights logged to MLflow).

    .venv/bin/python -m benchmarks.study_footprint --home /tmp/footprint

Runs ``vcr-study data prepare`` (the built-in data and its features, not timed), then the plan
(``launch --dry-run``, from docs/benchmarks.md's figures on a fresh home), then the default study
itself in a subprocess as ``make run`` does, timed, with Ray's session folders in their own
``--ray-temp-dir``; then the plan again, now from the speed the study measured on this home.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from study.store import disk_bytes

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "study.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="A results home to create.")
    parser.add_argument("--name", default="footprint")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "measurements" / "study_footprint_cpu.json"
    )
    args = parser.parse_args()
    home = args.home.absolute()
    if home.exists():
        sys.exit(f"{home}: exists; give a new folder")
    ray_temp = home.parent / f"{home.name}-ray"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["VCR_STUDY_HOME"] = str(home)
    subprocess.run(
        [*CLI, "data", "prepare"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    before = plan_of(args.name, env)
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, "launch", "--name", args.name, "--ray-temp-dir", str(ray_temp)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    after = plan_of(f"{args.name}-again", env)
    left = {
        part.name: disk_bytes(part) for part in home.iterdir() if part.name not in ("cache", "data")
    }
    weights = list((home / "mlartifacts").rglob("model/best.pt"))
    result = {
        "wall_seconds": round(wall, 1),
        "estimate_from_docs": before,
        "estimate_from_this_home": after,
        "ratio_docs": round(before["wall_seconds"] / wall, 2),
        "ratio_measured": round(after["wall_seconds"] / wall, 2),
        "home_bytes_besides_data_and_cache": sum(left.values()),
        "home_parts": left,
        "ray_session_bytes": disk_bytes(ray_temp),
        "checkpoint_files_left": len([p for p in home.rglob("*.pt") if p not in weights])
        + len(list(ray_temp.rglob("*.pt"))),
        "best_weights_logged": len(weights),  # each approach's best trial's, in MLflow
        "best_weights_bytes": sum(p.stat().st_size for p in weights),
        "terminal_lines": done.stdout.splitlines(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "terminal_lines"}, indent=2))
    shutil.rmtree(ray_temp, ignore_errors=True)


def plan_of(name: str, env: dict) -> dict:
    """The plan ``launch --dry-run`` prints for the default study, and its figures."""
    code = (
        "import json, sys; from study.launch import dry_run; from study.store import "
        "LaunchOptions; p = dry_run(LaunchOptions(name=sys.argv[1]), echo=lambda l: None); "
        "print(json.dumps({'wall_seconds': p.wall_seconds(), 'worst_wall_seconds': "
        "p.wall_seconds(p.worst_epochs), 'epoch_seconds': p.epoch_seconds, "
        "'source': p.seconds_source, 'expected_epochs': p.expected_epochs, "
        "'disk_needed': p.disk_needed, 'lines': p.lines()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, name],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
