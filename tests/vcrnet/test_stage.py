"""Node-local copies of cache entries (``vcrnet.features.stage``), on real files in tmp_path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vcrnet.errors import InputError
from vcrnet.features import stage as stage_module
from vcrnet.features.cache import MANIFEST
from vcrnet.features.stage import stage

NAME = "train-text-0123456789abcdef"
FILES = {
    "features-00000.npy": b"\x01" * 3000,
    "features-00001.npy": b"\x02" * 2000,
    "tags.npy": b"\x03" * 500,
    "items.json": b'["a-1", "a-2"]',
}

# A separate process that stages an entry, printing its echo lines and then "RESULT <path>". It
# imports stage without vcrnet/features/__init__.py (which imports torch: seconds per process),
# and checks on the way that stage needs no torch. Each file copy sleeps (``delay``), so that
# processes started together overlap; ``ready``/``go`` start them together.
CHILD = """
import shutil, sys, time, types
from pathlib import Path
features = types.ModuleType("vcrnet.features")
features.__path__ = [{features_dir!r}]
sys.modules["vcrnet.features"] = features
from vcrnet.features.stage import stage
assert "torch" not in sys.modules
copyfile = shutil.copyfile
def slow_copyfile(src, dst):
    time.sleep({delay})
    return copyfile(src, dst)
shutil.copyfile = slow_copyfile
Path({ready!r}).touch()
while not Path({go!r}).exists():
    time.sleep(0.01)
print("RESULT", stage(Path({entry!r}), Path({local_root!r})), flush=True)
"""


def make_entry(root: Path, with_files: bool = True) -> Path:
    entry = root / NAME
    entry.mkdir(parents=True)
    for name, data in FILES.items():
        (entry / name).write_bytes(data)
    manifest = {"cache_version": 2, "split": "train"}
    if with_files:
        manifest["files"] = {name: len(data) for name, data in FILES.items()}
    (entry / MANIFEST).write_text(json.dumps(manifest))
    return entry


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def start_child(entry: Path, local_root: Path, ready: Path, go: Path, delay: float):
    code = CHILD.format(
        features_dir=str(Path(stage_module.__file__).parent),
        entry=str(entry),
        local_root=str(local_root),
        ready=str(ready),
        go=str(go),
        delay=delay,
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def entry(tmp_path) -> Path:
    return make_entry(tmp_path / "shared")


def test_copy_is_identical_and_reused(entry, tmp_path):
    local_root, lines = tmp_path / "local", []
    local = stage(entry, local_root, echo=lines.append)
    assert local == local_root / NAME
    assert contents(local) == contents(entry)
    assert len(lines) == 1 and "copied" in lines[0]
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in local.iterdir()}
    assert stage(entry, local_root, echo=lines.append) == local
    assert "reusing" in lines[1]
    assert {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in local.iterdir()
    } == before
    assert sorted(path.name for path in local_root.iterdir()) == [f".{NAME}.lock", NAME]


def test_concurrent_processes_copy_once(entry, tmp_path):
    local_root, signals = tmp_path / "local", tmp_path / "signals"
    signals.mkdir()
    go = signals / "go"
    children = [
        start_child(entry, local_root, signals / f"ready-{i}", go, delay=0.1) for i in range(4)
    ]
    try:
        wait_for(lambda: len(list(signals.glob("ready-*"))) == len(children))
        go.touch()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            child.kill()
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    lines = [line for out, _ in outputs for line in out.splitlines()]
    assert sum("copied" in line for line in lines) == 1
    assert sum("reusing" in line for line in lines) == len(children) - 1
    assert any("waiting" in line for line in lines)  # they did overlap
    assert [line for line in lines if line.startswith("RESULT")] == [
        f"RESULT {local_root / NAME}"
    ] * len(children)
    assert contents(local_root / NAME) == contents(entry)
    assert sorted(path.name for path in local_root.iterdir()) == [f".{NAME}.lock", NAME]


def test_killed_copier_leaves_a_temporary_that_the_next_removes(entry, tmp_path):
    local_root, signals = tmp_path / "local", tmp_path / "signals"
    signals.mkdir()
    child = start_child(entry, local_root, signals / "ready", signals / "go", delay=0.05)
    try:  # the child then copies very slowly: killed after its first file
        (signals / "go").touch()
        wait_for(lambda: any(local_root.glob(f".{NAME}.tmp-*/*")))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert not (local_root / NAME).exists()
    local = stage(entry, local_root, echo=lambda _: None)  # the lock is free again
    assert contents(local) == contents(entry)
    assert not list(local_root.glob(f".{NAME}.tmp-*"))


def test_leftover_temporary_is_removed(entry, tmp_path):
    local_root = tmp_path / "local"
    leftover = local_root / f".{NAME}.tmp-99999"
    leftover.mkdir(parents=True)
    (leftover / "features-00000.npy").write_bytes(b"\x01" * 100)
    local = stage(entry, local_root, echo=lambda _: None)
    assert contents(local) == contents(entry)
    assert not leftover.exists()


def test_corrupted_copy_is_replaced(entry, tmp_path):
    local_root, lines = tmp_path / "local", []
    local = stage(entry, local_root, echo=lines.append)
    with open(local / "features-00001.npy", "r+b") as f:
        f.truncate(100)
    assert stage(entry, local_root, echo=lines.append) == local
    assert "features-00001.npy: 100 bytes, the manifest says 2,000: copying again" in lines[1]
    assert "copied" in lines[2]
    assert contents(local) == contents(entry)


def test_short_disk_reads_shared_storage(entry, tmp_path, monkeypatch):
    local_root = tmp_path / "local"
    monkeypatch.setattr(
        stage_module.shutil,
        "disk_usage",
        lambda path: stage_module.shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000),
    )
    needed = sum(map(len, FILES.values())) + (entry / MANIFEST).stat().st_size
    needed += stage_module.FREE_MARGIN
    with pytest.warns(
        UserWarning, match=f"{local_root} has 1,000 bytes free, the copy needs {needed:,}"
    ) as caught:
        assert stage(entry, local_root, echo=lambda _: None) == entry
    assert str(entry) in str(caught[0].message)
    assert not (local_root / NAME).exists()


def test_copy_error_reads_shared_storage(entry, tmp_path, monkeypatch):
    local_root, copyfile = tmp_path / "local", stage_module.shutil.copyfile

    def fail_on_tags(src, dst):
        if Path(src).name == "tags.npy":
            raise OSError(28, "No space left on device")
        return copyfile(src, dst)

    monkeypatch.setattr(stage_module.shutil, "copyfile", fail_on_tags)
    with pytest.warns(UserWarning, match="copying failed: .*No space left on device"):
        assert stage(entry, local_root, echo=lambda _: None) == entry
    assert sorted(path.name for path in local_root.iterdir()) == [f".{NAME}.lock"]


def test_manifest_without_files_reads_shared_storage(tmp_path):
    entry = make_entry(tmp_path / "shared", with_files=False)
    with pytest.warns(UserWarning, match="manifest lists no files"):
        assert stage(entry, tmp_path / "local", echo=lambda _: None) == entry
    assert not (tmp_path / "local" / NAME).exists()


def test_damaged_entry_is_an_error(entry, tmp_path):
    (entry / "tags.npy").write_bytes(b"\x03" * 10)
    with pytest.raises(InputError, match="tags.npy: 10 bytes, the manifest says 500"):
        stage(entry, tmp_path / "local", echo=lambda _: None)
