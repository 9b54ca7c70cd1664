"""The feature cache on disk: fingerprinted folders that appear only when complete.

A cache entry is a folder ``<cache>/<split>-<kind>-<fingerprint>/`` of ``.npy`` arrays (opened
memory-mapped) and a ``manifest.json``. The fingerprint hashes everything the arrays depend on
(the split file's content, the encoder, the settings), so a changed input gives a new entry and an
unchanged one is reused. An entry is written into a hidden temporary sibling and renamed into place
at the end: a folder with the final name is always complete, and an interrupted extraction leaves
only a temporary folder, which the next extraction on the same host removes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CACHE_VERSION = 2
MANIFEST = "manifest.json"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes; computed once per process for a file left unchanged (split
    files and ResNet weights are hashed for every cache lookup)."""
    stat = os.stat(path)
    return _digest(str(Path(path).absolute()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(settings: dict) -> str:
    """16 hex digits identifying ``settings`` (a JSON-able dict)."""
    text = json.dumps({"cache_version": CACHE_VERSION, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_dir(cache_root: str | Path, split: str, kind: str, settings: dict) -> Path:
    return Path(cache_root).absolute() / f"{split}-{kind}-{fingerprint(settings)}"


def is_complete(entry: Path) -> bool:
    return (entry / MANIFEST).is_file()


def read_manifest(entry: Path) -> dict:
    return json.loads((entry / MANIFEST).read_text())


@contextlib.contextmanager
def building(entry: Path, manifest: dict) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes ``entry``, else it is removed."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(entry)
    tmp = entry.parent / f".{entry.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _fsync_folder(tmp)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not is_complete(entry):  # not "another process finished it first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_array(entry: Path, name: str) -> np.ndarray:
    """A cached array, memory-mapped read-only."""
    return np.load(entry / f"{name}.npy", mmap_mode="r")


def new_array(folder: Path, name: str, shape: tuple[int, ...], dtype: str) -> np.memmap:
    """A ``.npy`` file of the given shape, memory-mapped for writing."""
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


def _remove_stale_temporaries(entry: Path) -> None:
    """Remove temporaries of ``entry`` left by dead processes of this host."""
    prefix = f".{entry.name}.tmp-{socket.gethostname()}-"
    for tmp in entry.parent.glob(f"{prefix}*"):
        pid = tmp.name.removeprefix(prefix)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
