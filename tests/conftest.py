"""Shared fixtures: one small synthetic dataset and its features, made once per test session."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from vcrnet.data import write_synthetic
from vcrnet.features import FeatureSettings, extract_split

SMALL_SIZES = {"train": 24, "val": 9, "test": 9}
SMALL_SETTINGS = FeatureSettings(image_size=(256, 128))  # small canvas: fast and enough for tests


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic VCR directory. Read it; copy it before changing it."""
    return write_synthetic(tmp_path_factory.mktemp("synthetic") / "vcr", seed=3, sizes=SMALL_SIZES)


@pytest.fixture(scope="session")
def synthetic_features(synthetic_dir, tmp_path_factory):
    """The train split's cache entries of ``synthetic_dir``."""
    cache = tmp_path_factory.mktemp("cache")
    return extract_split(synthetic_dir, "train", cache, SMALL_SETTINGS, progress=False)


@pytest.fixture
def vcr_copy(synthetic_dir, tmp_path) -> Path:
    """A private copy of the synthetic directory, free to break."""
    return Path(shutil.copytree(synthetic_dir, tmp_path / "vcr"))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``vcr-study ARGS...`` in this process; returns (exit code, stdout, stderr)."""
    from study.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["vcr-study", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs, shared by a module's tests (starting Ray costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, what: str, timeout: float = 120):
    """Poll ``url`` until it answers; fail if ``process`` (the server) exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            assert process.poll() is None, f"{what} exited"
            assert time.monotonic() < deadline, f"{what} did not answer in {timeout:.0f} s"
            time.sleep(0.5)
