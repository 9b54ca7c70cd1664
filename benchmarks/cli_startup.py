"""How long ``vcr-study`` takes to start: the wall time of commands that only read or only print
help, and which heavy libraries each loads (issue 25: ``--help`` under 1 s on 2 CPUs).

    .venv/bin/python benchmarks/cli_startup.py [--repeat 5] [--json out.json]
        [--home HOME --name STUDY]

Each command runs ``--repeat`` times in a fresh process (the first run, with cold caches, is
dropped); the median wall time is reported. Without ``--home``, in an empty home (``studies``
lists nothing there but imports what it needs to read one); with ``--home`` and ``--name`` (a
home holding a finished study), ``studies`` and ``best --name`` read it. The libraries a command
loads are read from ``python -X importtime`` of the same command line. The command runs
``study.cli.main`` from the current directory's ``study`` (run it from an older checkout to
measure that one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (
    ("--help",),
    ("launch", "--help"),
    ("best", "--help"),
    ("studies",),
)
HEAVY = ("torch", "ray", "mlflow", "optuna", "pandas")
CLI = "from study.cli import main; main()"


def timed(args: tuple[str, ...], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, check=False)
    return time.perf_counter() - start


def loaded(args: tuple[str, ...], env: dict) -> list[str]:
    """The heavy top-level packages the command imports."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
    return [h for h in HEAVY if h in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--home", type=Path, help="a home holding the study --name")
    parser.add_argument("--name", help="a finished study of --home")
    args = parser.parse_args()
    rows = []
    commands = COMMANDS
    if args.home:
        commands = (("studies",), ("best", "--name", args.name))
    with tempfile.TemporaryDirectory() as empty:
        env = {**os.environ, "VCR_STUDY_HOME": str(args.home or empty)}
        for command in commands:
            times = [timed(command, env) for _ in range(args.repeat + 1)][1:]
            row = {
                "command": "vcr-study " + " ".join(command),
                "median_s": round(statistics.median(times), 2),
                "min_s": round(min(times), 2),
                "loads": loaded(command, env),
            }
            rows.append(row)
            print(
                f"{row['command']:<28} median {row['median_s']:.2f} s (min {row['min_s']:.2f}); "
                f"loads {', '.join(row['loads']) or 'none of ' + '/'.join(HEAVY)}"
            )
    if args.json:
        home = "a home holding one finished study" if args.home else "an empty home"
        result = {"cpus": os.cpu_count(), "home": home, "rows": rows}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
