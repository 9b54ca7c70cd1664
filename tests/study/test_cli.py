"""The CLI's own promises: every command in the help, every metric name explained in ``best``'s
help, and ``python -m study.cli`` as the console script."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT
from vcrnet.metrics import DECODINGS, EVALUATED

COMMANDS = (
    "data", "train", "predict", "evaluate", "launch", "best", "ablations", "studies", "delete",
    "ui", "rerun",
)  # fmt: skip


def test_every_command_is_listed(cli):
    code, out, _ = cli("--help")
    assert code == 0
    assert all(f" {command} " in out for command in COMMANDS)


def test_best_explains_every_metric_name(cli):
    """The table in ``best --help`` names every decoding ``vcrnet.metrics`` has, none other."""
    code, out, _ = cli("best", "--help")
    assert code == 0
    named = {line.split()[0].strip("│ ") for line in out.splitlines() if line.strip("│ ")}
    assert set(EVALUATED) <= named, set(EVALUATED) - named
    listed = [w for w in named if w.startswith(("q2a", "qa2r", "joint"))]
    assert set(listed) <= set(DECODINGS) | {"joint_nll"}


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"]])
def test_python_dash_m_runs_the_cli(args):
    out = subprocess.run(
        [sys.executable, "-m", "study.cli", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
