"""Shared fixtures: one small synthetic dataset and its features, made once per test session.
Shared helper functions and constants: ``tests/helpers.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import SMALL_SETTINGS, SMALL_SIZES
from vcrnet.data import write_synthetic
from vcrnet.features import extract_split


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
