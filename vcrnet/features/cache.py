"""The feature cache on disk: fingerprinted folders that appear only when complete.

A cache entry is a folder ``<cache>/<split>-<kind>-<fingerprint>/`` of ``.npy`` arrays (opened
memory-mapped) and a ``manifest.json``, written last, that lists every other file with its size
(``"files"``) and a cheap checksum (``"checksums"``, the scheme ``"checksum"`` names: ``checksum``).
Readers open an entry through ``open_entry``, which checks its files against the manifest once per
process (``damage``: a file cut short by a full disk or a broken copy is one line, not a numpy
traceback); ``vcrnet.features.stage`` checks a node's copy the same way. The fingerprint hashes
everything the arrays depend on (the split file's content, the encoder, the settings), so a
changed input gives a new entry and an unchanged one is reused. A folder with the final name is
always complete:

- ``building``: an entry written in one go, into a hidden temporary sibling renamed into place at
  the end; an interrupted write leaves only the temporary, which the next one on the host removes;
- ``partial_dir`` + ``shard_file`` + ``finish``: an entry written in shards, possibly by several
  machines at once, into the hidden ``.<entry>.partial/``; each shard file appears whole (a
  temporary file renamed), so an interrupted extraction resumes from the shards it finished, and
  ``finish`` renames the folder into place once they all are there.

A large array can be stored in shards, ``<name>-00000.npy``, ``<name>-00001.npy``, ... (the
manifest's ``"shards"`` says how many), and, with the manifest's ``"storage": "int8"``, as int8
codes with a float32 scale per row in ``scales-NNNNN.npy`` (``quantize``): ``open_rows`` reads
either as one float16 array.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vcrnet.atomic import alive, owner, replacing
from vcrnet.errors import InputError

# 3: features in shards, the manifest lists the files; 4: movies.json (the dev split is carved by
# movie). A change to the extraction code (EXTRACTION_SOURCES) needs a new version, else features
# written by the old code would be reused: tests/vcrnet/test_cache.py records the code's digest
# for each version and fails when they part
CACHE_VERSION = 4
EXTRACTION_SOURCES = (  # what decides an entry's contents, relative to the vcrnet package
    "data/records.py",
    "data/grounding.py",
    "features/cache.py",
    "features/extract.py",
    "features/image.py",
    "features/settings.py",
    "features/text.py",
)
MANIFEST = "manifest.json"
CHECKSUM = "crc32-ends-1MiB"  # the manifest's "checksum": how its "checksums" are computed
CHECKSUM_BYTES = 1 << 20  # read at each end of a file: 2 MiB a file, ~0.6 GB for VCR's train
# split with BERT-base (~310 shards of <= 0.8 GB), once per process
REBUILD = (
    "a damaged feature cache entry: remove {entry} and run `vcr-study data features` "
    "again with the same options"
)


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


def extraction_digest() -> str:
    """``sources_digest`` of this package's ``EXTRACTION_SOURCES``."""
    package = Path(__file__).absolute().parents[1]
    return sources_digest({name: (package / name).read_text() for name in EXTRACTION_SOURCES})


def sources_digest(sources: dict[str, str]) -> str:
    """sha256 of Python sources (name -> text) as code: their syntax trees without docstrings,
    so comments, docstrings and formatting do not count; ``CACHE_VERSION``'s own line neither."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        tree = ast.parse(sources[name])
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and _is_docstring(body[0]):
                node.body = body[1:] or [ast.Pass()]
        tree.body = [n for n in tree.body if not _sets_version(n)]
        digest.update(name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return digest.hexdigest()


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _sets_version(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "CACHE_VERSION" for t in node.targets
    )


def fingerprint(settings: dict) -> str:
    """16 hex digits identifying ``settings`` (a JSON-able dict)."""
    text = json.dumps({"cache_version": CACHE_VERSION, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_dir(cache_root: str | Path, split: str, kind: str, settings: dict) -> Path:
    return Path(cache_root).absolute() / f"{split}-{kind}-{fingerprint(settings)}"


def is_complete(entry: Path) -> bool:
    return (entry / MANIFEST).is_file()


def read_manifest(entry: Path) -> dict:
    """The manifest as written, unchecked (readers of the arrays use ``open_entry``)."""
    return json.loads((entry / MANIFEST).read_text())


def open_entry(entry: Path) -> dict:
    """The manifest of a complete ``entry`` whose files match it (``damage``), else a one-line
    ``InputError`` naming the file and how to rebuild the entry. Every reader of the arrays
    opens entries through this (``CachedVCRDataset``, ``open_rows``)."""
    if not is_complete(entry):
        raise InputError(f"{entry}: not a complete feature cache entry")
    problem = entry_problem(entry)
    if problem is not None:
        raise InputError(f"{problem} ({REBUILD.format(entry=entry)})")
    return read_manifest(entry)


def entry_problem(entry: Path) -> str | None:
    """Why ``entry`` is not complete and whole (``damage``, in one line), or None. Checked once
    per process for each manifest written (a batch, a DataLoader worker, a dataset's subset
    asks again for free)."""
    try:
        stat = (entry / MANIFEST).stat()
    except FileNotFoundError:
        return f"{entry / MANIFEST}: missing"
    return _problem(str(Path(entry).absolute()), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _problem(entry: str, inode: int, size: int, mtime_ns: int) -> str | None:
    return damage(Path(entry), read_manifest(Path(entry)))


def damage(folder: Path, manifest: dict) -> str | None:
    """The first way ``folder``'s files differ from what ``manifest`` lists (a file missing, its
    size, then its checksum), in one line naming the file; None if none. A manifest from before
    checksums (no ``"checksum"``, or another scheme) is checked by size only; files the manifest
    does not list are not looked at."""
    for name, want in sorted(manifest.get("files", {}).items()):
        path = folder / name
        try:
            have = path.stat().st_size
        except FileNotFoundError:
            return f"{path}: missing"
        if have != want:
            return f"{path}: {have:,} bytes, the manifest says {want:,}"
    sums = manifest.get("checksums", {}) if manifest.get("checksum") == CHECKSUM else {}
    for name, want in sorted(sums.items()):
        have = checksum(folder / name)
        if have != want:
            return (
                f"{folder / name}: checksum {have}, the manifest says {want} (its first or "
                f"last MiB changed)"
            )
    return None


def checksum(path: Path) -> str:
    """The ``crc32-ends-1MiB`` checksum, 8 hex digits: crc32 of the file's first MiB, its last
    MiB (the bytes after the first, for a file under 2 MiB) and its size (8 bytes, little
    endian). Cheap for any size (2 MiB read); it catches a changed header and a tail lost or
    zero-filled by a broken copy, not a change in between (the size check catches a cut)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        crc = zlib.crc32(f.read(CHECKSUM_BYTES))
        f.seek(max(CHECKSUM_BYTES, size - CHECKSUM_BYTES))
        crc = zlib.crc32(f.read(CHECKSUM_BYTES), crc)
    return f"{zlib.crc32(size.to_bytes(8, 'little'), crc):08x}"


@contextlib.contextmanager
def building(entry: Path, manifest: dict) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it becomes ``entry``, else it is removed."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(entry.parent, f".{entry.name}.tmp-", shutil.rmtree)
    tmp = entry.parent / f".{entry.name}.tmp-{owner()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        finish(tmp, entry, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def partial_dir(entry: Path) -> Path:
    """Where ``entry`` is built in shards (kept across interruptions: the finished shards)."""
    return entry.parent / f".{entry.name}.partial"


def shard_name(name: str, number: int) -> str:
    return f"{name}-{number:05d}"


@contextlib.contextmanager
def shard_file(folder: Path, name: str, shape: tuple[int, ...], dtype: str) -> Iterator[np.memmap]:
    """A memory-mapped ``<name>.npy`` of ``folder`` to fill: written to a temporary file (the
    dead's removed first), synced and renamed on success, removed on failure."""
    _remove_stale_temporaries(folder, f".{name}.tmp-", _unlink)
    with replacing(folder / f"{name}.npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield array
        array.flush()
        del array
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


def finish(folder: Path, entry: Path, manifest: dict) -> None:
    """Make the filled ``folder`` the complete ``entry``: the manifest (with every file's size
    and checksum) written last, then one rename. Another process having finished it first is
    fine."""
    for leftover in folder.glob(".*"):  # temporaries of shard writers that died
        _unlink(leftover)
    paths = [p for p in sorted(folder.iterdir()) if p.name != MANIFEST]
    files = {p.name: p.stat().st_size for p in paths}
    sums = {p.name: checksum(p) for p in paths}
    (folder / MANIFEST).write_text(
        json.dumps(
            {**manifest, "files": files, "checksum": CHECKSUM, "checksums": sums},
            indent=2,
            sort_keys=True,
        )
    )
    fsync_folder(folder)
    try:
        os.rename(folder, entry)
    except OSError:
        if not is_complete(entry):  # not "another process finished it first"
            raise
        shutil.rmtree(folder, ignore_errors=True)


def open_array(entry: Path, name: str) -> np.ndarray:
    """A cached array, memory-mapped read-only."""
    return np.load(entry / f"{name}.npy", mmap_mode="r")


def new_array(folder: Path, name: str, shape: tuple[int, ...], dtype: str) -> np.memmap:
    """A ``.npy`` file of the given shape, memory-mapped for writing."""
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


SCALES = "scales"
QUANTIZE_ROWS = 1 << 16  # rows quantized at a time (float32 scratch: ~200 MB at 768 wide)


def open_rows(entry: Path, name: str) -> np.ndarray | ShardedRows | QuantizedRows:
    """A cached array stored whole (``<name>.npy``) or in the manifest's ``"shards"``, in
    float16 or int8 (read as float16), memory-mapped read-only."""
    manifest = open_entry(entry)
    shards = manifest.get("shards")
    if shards is None:
        return open_array(entry, name)
    rows = _joined([open_array(entry, shard_name(name, k)) for k in range(shards)])
    if manifest.get("storage", "float16") == "float16":
        return rows
    return QuantizedRows(
        rows, _joined([open_array(entry, shard_name(SCALES, k)) for k in range(shards)])
    )


def _joined(parts: list[np.ndarray]) -> np.ndarray | ShardedRows:
    return parts[0] if len(parts) == 1 else ShardedRows(parts)


def quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``rows [R, D]`` -> int8 codes ``[R, D]`` and a float32 scale per row ``[R]``, such that
    ``rows ~ codes * scale[:, None]``: each row's largest magnitude becomes 127."""
    codes = np.empty(rows.shape, dtype=np.int8)
    scales = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), QUANTIZE_ROWS):
        part = np.asarray(rows[start : start + QUANTIZE_ROWS], dtype=np.float32)
        scale = np.abs(part).max(axis=1, initial=0.0) / 127
        np.rint(
            np.divide(part, scale[:, None], out=np.zeros_like(part), where=scale[:, None] > 0),
            out=part,
        )
        codes[start : start + len(part)] = part
        scales[start : start + len(part)] = scale
    return codes, scales


class QuantizedRows:
    """int8 rows and their scales read as float16 rows: slices and ``np.take`` (as
    ``ShardedRows``), each read dequantized."""

    def __init__(self, codes: np.ndarray | ShardedRows, scales: np.ndarray | ShardedRows):
        self.codes, self.scales = codes, scales
        self.shape, self.dtype = codes.shape, np.dtype(np.float16)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        return _dequantized(np.asarray(self.codes[key]), np.asarray(self.scales[key]))

    def take(
        self, rows: np.ndarray, axis: int = 0, out: np.ndarray | None = None, mode: str = "raise"
    ) -> np.ndarray:
        values = _dequantized(np.take(self.codes, rows, axis=0), np.take(self.scales, rows, axis=0))
        if out is None:
            return values
        out[...] = values
        return out


def _dequantized(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return (codes * scales[:, None]).astype(np.float16)


class ShardedRows:
    """Shard arrays read as one, concatenated along rows: ``len``, ``shape``, ``dtype``, slices
    of rows and ``np.take(rows, [rows], axis=0, out=...)`` (what the readers use)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.bounds = np.cumsum([0, *(len(p) for p in parts)])
        self.shape = (int(self.bounds[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        if not isinstance(key, slice):
            return self.take(np.asarray(key), axis=0)
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise IndexError("ShardedRows: only row slices with step 1")
        first = int(np.searchsorted(self.bounds, start, side="right")) - 1
        if first < len(self.parts) and stop <= self.bounds[first + 1]:  # one shard: a view
            return self.parts[first][start - self.bounds[first] : stop - self.bounds[first]]
        return self.take(np.arange(start, stop), axis=0)

    def take(
        self, rows: np.ndarray, axis: int = 0, out: np.ndarray | None = None, mode: str = "raise"
    ) -> np.ndarray:
        if axis != 0:
            raise IndexError("ShardedRows: rows only (axis=0)")
        rows = np.asarray(rows, dtype=np.int64)
        if out is None:
            out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        shard = np.searchsorted(self.bounds, rows, side="right") - 1
        for k in np.unique(shard):
            picked = shard == k
            out[picked] = self.parts[k][rows[picked] - self.bounds[k]]
        return out


def _remove_stale_temporaries(folder: Path, prefix: str, remove) -> None:
    """Remove temporaries (``<prefix><host>-<pid>...``) of dead processes of this host."""
    mine = f"{prefix}{socket.gethostname()}-"
    for tmp in folder.glob(f"{mine}*"):
        pid = tmp.name.removeprefix(mine).split(".")[0]
        if pid.isdigit() and not alive(int(pid)):
            remove(tmp)


def _unlink(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
