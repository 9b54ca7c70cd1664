"""Safe defaults: servers bound to 127.0.0.1, checkpoints loaded with weights_only=True, YAML read
with a safe loader, no shell command built from input, no secret written with a study."""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import pytest

from study.cli import ui
from study.tracking import move_credentials_to_env, redact
from tests.helpers import ROOT

SOURCES = sorted(
    [*ROOT.glob("vcrnet/**/*.py"), *ROOT.glob("study/**/*.py"), *ROOT.glob("benchmarks/*.py")]
)


def calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call of ``name`` (e.g. ``torch.load``) in the project's own code."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                found.append((path, node))
    return found


def keyword(call: ast.Call, name: str):
    return next((ast.literal_eval(k.value) for k in call.keywords if k.arg == name), None)


def test_every_torch_load_is_weights_only():
    loads = calls("torch.load")
    assert loads  # the checkpoint and the image weights
    for path, call in loads:
        assert keyword(call, "weights_only") is True, f"{path}:{call.lineno}"


def test_yaml_is_read_only_with_the_safe_loader():
    assert calls("yaml.safe_load")
    for name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
        assert not calls(name), name


def test_no_shell_and_no_command_string():
    for name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
        assert not calls(name), name
    for runner in (
        "subprocess.run",
        "subprocess.call",
        "subprocess.Popen",
        "subprocess.check_call",
        "subprocess.check_output",
    ):
        for path, call in calls(runner):
            assert keyword(call, "shell") in (None, False), f"{path}:{call.lineno}"
            assert not isinstance(call.args[0], ast.Constant | ast.JoinedStr), (
                f"{path}:{call.lineno}: a command is a list of arguments, not a string"
            )


def test_servers_bind_to_loopback_by_default():
    host = inspect.signature(ui.ui_command).parameters["host"].default
    assert host == "127.0.0.1"
    yaml_text = (ROOT / "ray_cluster.yaml").read_text()
    assert "--host 127.0.0.1" in yaml_text and "--dashboard-host=127.0.0.1" in yaml_text
    assert "0.0.0.0" not in yaml_text


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("http://user:s3cret@mlflow.example.org:5000", "http://***@mlflow.example.org:5000"),
        ("https://token@mlflow.example.org/path", "https://***@mlflow.example.org/path"),
        ("postgresql://u:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_credentials_in_a_uri_are_never_shown(uri, shown):
    assert redact(uri) == shown


def test_credentials_in_a_tracking_uri_move_to_mlflows_variables(monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    saved = move_credentials_to_env("https://alice:s3cret@mlflow.example.org:443/x")
    assert saved == "https://mlflow.example.org:443/x" and "s3cret" not in saved
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
