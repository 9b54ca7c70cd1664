"""Helpers the tests share (``from tests.helpers import ...``); the fixtures are in conftest.py."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np

from vcrnet.features import FeatureSettings

ROOT = Path(__file__).resolve().parents[1]  # the repository
SMALL_SIZES = {"train": 24, "val": 9, "test": 9}
SMALL_SETTINGS = FeatureSettings(image_size=(256, 128))  # small canvas: fast and enough for tests


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


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


def assert_same_features(one, other) -> None:
    """Every array equal, the float16 features to float16 tolerance (the encoders batch
    differently), and the batches the model reads too."""
    for name, array in one.arrays.items():
        mine, theirs = np.asarray(array[:]), np.asarray(other.arrays[name][:])
        assert mine.shape == theirs.shape, name
        if name in ("text", "objects"):
            np.testing.assert_allclose(
                theirs.astype(np.float32),
                mine.astype(np.float32),
                rtol=2e-3,
                atol=2e-3,
                err_msg=name,
            )
        else:
            assert np.array_equal(mine, theirs), name
    from vcrnet.features.batches import gather

    positions = np.arange(len(one))[::-1].copy()
    for key, value in gather(one, positions).items():
        np.testing.assert_allclose(
            gather(other, positions)[key].float().numpy(),
            value.float().numpy(),
            rtol=2e-3,
            atol=2e-3,
            err_msg=key,
        )
