"""Files that appear whole or not at all: write a hidden temporary sibling, then rename it over.

    with replacing(path) as tmp:   # tmp keeps path's suffix (savefig, write_html infer the format)
        torch.save(obj, tmp)

A crash leaves the old file (or none), never a half-written one. (Feature-cache entries are whole
folders: ``vcrnet.features.cache``, whose shard files use this.)
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path``. The
    temporary's name says whose it is (``.<stem>.tmp-<host>-<pid><suffix>``): on shared storage
    several machines may write one folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{owner()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def owner() -> str:
    """This process, as a temporary's name says it: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def alive(pid: int) -> bool:
    """Whether process ``pid`` (on this machine) still runs; someone else's counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def nearest_existing(path: str | Path) -> Path:
    """``path`` (absolute) if it exists, else its nearest ancestor that does: where a file or
    folder to be made would land."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def check_writable(path: str | Path, what: str) -> None:
    """``path`` (a file or folder, existing or to be made) can be written by this process: the
    nearest folder of it that exists is a folder it may write; else an ``InputError`` naming
    ``what`` (an option, ``--out X``, or ``VCR_STUDY_HOME X``)."""
    from vcrnet.errors import InputError

    existing = nearest_existing(path)
    if not existing.is_dir():
        raise InputError(f"{what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what}: {existing} is not writable")
