"""Copy a feature-cache entry to the node's local disk once, so that trials read it from there.

A study's trials read their cache entry memory-mapped, page by page, all at once on a cluster: on
shared storage (NFS) that is every trial of every node pulling up to ~180 GB over the network.
``stage`` copies the entry to local disk once per node and returns the folder to read from::

    <local_root>/<entry name>/              a complete copy: manifest.json present, copied last
    <local_root>/.<entry name>.lock         flock'd while one process checks or copies the entry
    <local_root>/.<entry name>.tmp-<pid>/   a copy in progress (or left by a killed copier)

The copy keeps the entry's fingerprinted name, so a changed entry is a new copy. It is made in a
hidden temporary sibling, checked as every reader checks an entry (``cache.damage``: each file the
manifest lists, its size and checksum; and the copy's manifest the same bytes as the entry's),
then renamed into place: a folder with the final name is complete. The entry itself is checked
before it is copied (``cache.open_entry``: a damaged one is an error that says how to rebuild it).
The lock makes the first process of a node copy and the others wait, then reuse; a process killed
mid-copy releases it (the kernel drops a dead process's flock) and leaves only a temporary folder,
which the next copier removes. Where the copy cannot be made (local disk too small, an error while
copying, an entry from before manifests listed their files), ``stage`` warns in one line and
returns the shared entry: slower, never wrong.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from vcrnet.features import cache
from vcrnet.features.cache import MANIFEST, fsync_folder, read_manifest

LOCAL_CACHE_VARIABLE = "VCR_STUDY_LOCAL_CACHE"  # a node's local folder for copies (trials)
# Left free on local disk after the copy, for what the trial itself writes there (checkpoints,
# logs, Ray's spilled objects under /tmp). A round guess, not a measurement.
FREE_MARGIN = 2**30


def stage(entry: Path, local_root: Path, echo: Callable[[str], None] = print) -> Path:
    """The path to read ``entry`` from: its copy under ``local_root`` (made now by this process,
    or already there / made by another process of this node meanwhile), or ``entry`` itself when
    the copy cannot be made (said in one warning line naming both folders and why: for a short
    disk, the bytes needed and free). ``echo`` gets one line: copied, reused, or waiting.

    Raises ``InputError`` when ``entry``'s files do not match its own manifest (a damaged entry).
    """
    entry, local_root = Path(entry), Path(local_root)
    why_not = _stage(entry, local_root / entry.name, echo)
    if why_not is None:
        return local_root / entry.name
    warnings.warn(
        f"reading {entry} from shared storage, not from a copy in {local_root}: {why_not}",
        stacklevel=2,
    )
    return entry


def _stage(entry: Path, local: Path, echo: Callable[[str], None]) -> str | None:
    """Make sure ``local`` is a complete copy of ``entry``; None, or why it is not."""
    manifest = read_manifest(entry)
    if "files" not in manifest:
        return "its manifest lists no files to check a copy against (made before they did)"
    local.parent.mkdir(parents=True, exist_ok=True)
    with _locked(local, echo):
        problem = _difference(local, entry)
        if problem is None:
            echo(f"{local}: reusing this node's copy")
            return None
        if local.exists():
            echo(f"{problem}: copying again")
        cache.open_entry(entry)  # a damaged entry: an InputError that says how to rebuild it
        _clear(local)
        size = sum(manifest["files"].values()) + (entry / MANIFEST).stat().st_size
        needed, free = size + FREE_MARGIN, shutil.disk_usage(local.parent).free
        if free < needed:
            return (
                f"{local.parent} has {free:,} bytes free, the copy needs {needed:,} "
                f"({FREE_MARGIN:,} of them left free)"
            )
        return _copy(entry, local, [*manifest["files"], MANIFEST], size, echo)


@contextlib.contextmanager
def _locked(local: Path, echo: Callable[[str], None]) -> Iterator[None]:
    """Hold ``local``'s lock: an exclusive flock, released on exit (or by the kernel if we die).
    The lock file stays: removing it would let two processes lock two different files."""
    with open(local.with_name(f".{local.name}.lock"), "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo(f"{local}: waiting for another process of this node to copy it")
            fcntl.flock(file, fcntl.LOCK_EX)
        yield


def _difference(folder: Path, entry: Path) -> str | None:
    """The first way ``folder`` is not a whole copy of ``entry`` (its manifest, then its files:
    ``cache.entry_problem``); None if it is."""
    try:
        same = (folder / MANIFEST).read_bytes() == (entry / MANIFEST).read_bytes()
    except FileNotFoundError:
        return f"{folder / MANIFEST}: missing"
    if not same:
        return f"{folder / MANIFEST}: differs from {entry / MANIFEST}"
    return cache.entry_problem(folder)


def _clear(local: Path) -> None:
    """Remove the temporaries of killed copiers, and ``local`` if there (it did not match).
    Called under the lock: no live process of this node is writing them."""
    for tmp in local.parent.glob(f".{local.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if local.exists():  # leaves its final name at once, so nobody reads it half-removed
        trash = _temporary(local)
        os.rename(local, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _copy(
    entry: Path, local: Path, names: list[str], size: int, echo: Callable[[str], None]
) -> str | None:
    """Copy ``names`` (the manifest last) of ``entry`` into ``local`` through a temporary
    sibling; None, or why it failed."""
    tmp, start = _temporary(local), time.monotonic()
    try:
        tmp.mkdir()
        for name in names:
            shutil.copyfile(entry / name, tmp / name)  # sendfile on Linux: no Python buffers
        fsync_folder(tmp)
        problem = _difference(tmp, entry)
        if problem is not None:
            return f"the copy does not match the manifest: {problem}"
        os.rename(tmp, local)
    except OSError as err:  # ENOSPC from another copy sharing the disk, a failing disk, ...
        return f"copying failed: {err}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    echo(f"{local}: copied from {entry} ({size:,} bytes in {time.monotonic() - start:.0f} s)")
    return None


def _temporary(local: Path) -> Path:
    return local.with_name(f".{local.name}.tmp-{os.getpid()}")
