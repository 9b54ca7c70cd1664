"""Reading a feature-cache entry from the shared folder against reading its staged copy on local
disk: items/s of the training input path's host side, side by side (issue 14).

On a cluster a trial reads its cache entry either from shared storage (NFS) or from the node-local
copy that ``vcrnet.features.stage.stage`` makes. This writes a VCR-shaped entry pair in the shared
folder (``benchmarks.vcr_speed.write_cache``: BERT-base width, VCR's mean lengths, ~0.86 MB a
question), stages it to local disk (timed: seconds and MB/s of the copy), then times
``vcrnet.features.batches.gather`` over an epoch's batches (``epoch_order``: 96 a batch, length
buckets of 50 batches) read from each place:

- ``cold``: every file of both entries evicted from the page cache first (``posix_fadvise
  DONTNEED``; for the loopback mount, also the files it serves), so the epoch reads the storage;
- ``warm``: a second epoch at once over the same open arrays (a trial's later epochs, when the
  entry fits in memory): the copy into the batch alone.

Passes are interleaved (shared, local, shared, local, ...: this machine's speed drifts 2x over
minutes) and medians reported; the whole measurement is made ``--repeats`` times and the one with
the least spread kept. Beside them: each place's plain sequential read of the entry (cold, MB/s),
and the bytes per item, so that items/s x bytes/item tells whether ``gather`` is bound by the
storage (cold far below warm, near the sequential read) or by the copy into the batch (cold near
warm); ``bound_by`` says "storage" where cold is under half of warm.

The shared folder: ``--shared-mount DIR``, a network mount (NFS) made beforehand (the entry is
written through it; only this client's page cache can be evicted); by default a loopback sshfs
mount of a temporary folder made by this script (it needs ``sshd``, ``sshfs`` and /dev/fuse: on
this machine, Debian 12 as root, ``apt-get install -y openssh-server sshfs``); without them, the
temporary folder itself (said in the JSON: no network filesystem). The loopback mount is, in a
temporary folder, with a free port on 127.0.0.1 (both processes stopped by pid at the end)::

    ssh-keygen -q -t ed25519 -N '' -f host_key; ssh-keygen -q -t ed25519 -N '' -f client_key
    cp client_key.pub authorized_keys; mkdir -p /run/sshd
    /usr/sbin/sshd -D -e -f /dev/null -p PORT -o ListenAddress=127.0.0.1 -o HostKey=host_key \\
        -o AuthorizedKeysFile=authorized_keys -o PasswordAuthentication=no -o StrictModes=no \\
        -o PidFile=none -o 'Subsystem=sftp internal-sftp' &
    sshfs -f -o ro,IdentityFile=client_key,Port=PORT,Ciphers=aes128-gcm@openssh.com \\
        -o StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR \\
        root@127.0.0.1:EXPORT MOUNT &
    ...
    fusermount -u MOUNT; kill SSHD_PID

sshfs without ``kernel_cache`` drops a file's pages at each open, so a new process starts cold on
the mount whatever the eviction (NFS keeps them while the file is unchanged); the warm pass keeps
its arrays open. ``posix_fadvise`` evicts on the mount too (checked here: a file read through one
descriptor, 64 MB resident, 0 after the call on that descriptor). Uses about twice the entry's
size on the temporary folder's disk, removed at the end (also on an error, Ctrl-C or SIGTERM).
Prints JSON, and writes it to ``--out``::

    .venv/bin/python -m benchmarks.read_speed --questions 3000 \\
        --out docs/measurements/read_speed_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import getpass
import json
import mmap
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.vcr_speed import vcr_lengths, write_cache  # noqa: E402
from vcrnet.features import CachedVCRDataset, SplitFeatures  # noqa: E402
from vcrnet.features.batches import epoch_order, gather, item_sizes  # noqa: E402
from vcrnet.features.stage import stage  # noqa: E402

MB = 1e6
PASSES = ("shared_cold", "shared_warm", "local_cold", "local_warm")
BYTES_PER_QUESTION = 0.87 * MB  # the entry pair at VCR's shape, BERT-base (measured)
SSHFS_OPTIONS = "ro,Ciphers=aes128-gcm@openssh.com"  # AES-NI: ~120 MB/s here, chacha20 ~90


@dataclass(frozen=True)
class Shared:
    """The shared folder: where the entry is written, where it is read, the folders whose copies
    of its files a cold pass evicts, and what it is, in words."""

    write: Path
    read: Path
    evict: tuple[Path, ...]
    kind: str


def entry_files(features: SplitFeatures, roots: tuple[Path, ...]) -> list[Path]:
    """The files of both entries, as seen under each of ``roots``."""
    return [
        root / entry.name / path.name
        for root in roots
        for entry in (features.text, features.objects)
        for path in entry.iterdir()
    ]


def evict(files: list[Path]) -> int:
    """Drop ``files`` from the page cache (their clean pages, not mapped by anyone); the bytes
    still resident afterwards (0 when it worked)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return sum(resident(path) for path in files)


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache (``mincore`` over a mapping that faults nothing)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as view:
        buffer = (ctypes.c_char * size).from_buffer(view)
        failed = libc.mincore(
            ctypes.c_void_p(ctypes.addressof(buffer)), ctypes.c_size_t(size), vector
        )
        del buffer
    if failed:
        raise OSError(ctypes.get_errno(), f"mincore {path}")
    return int((np.frombuffer(vector, dtype=np.uint8) & 1).sum()) * mmap.PAGESIZE


def epoch_rate(dataset: CachedVCRDataset, order: list[np.ndarray]) -> float:
    """Items/s of ``gather`` over ``order``'s batches, one after another."""
    start = time.perf_counter()
    for positions in order:
        gather(dataset, positions)
    return sum(len(b) for b in order) / (time.perf_counter() - start)


def cold_and_warm(
    features: SplitFeatures, order: list[np.ndarray], files: list[Path]
) -> tuple[float, float, int]:
    """Items/s of an epoch from an evicted cache, then of one more over the same open arrays;
    and the bytes left resident by the eviction."""
    left = evict(files)
    dataset = CachedVCRDataset(features)
    return epoch_rate(dataset, order), epoch_rate(dataset, order), left


def sequential_read(files: list[Path], evicted: list[Path]) -> float:
    """MB/s of reading ``files`` whole, in 1 MiB reads, after evicting ``evicted``."""
    evict(evicted)
    start, total = time.perf_counter(), 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while block := f.read(1 << 20):
                total += len(block)
    return total / MB / (time.perf_counter() - start)


def staged(
    shared: SplitFeatures, local_root: Path, evicted: list[Path]
) -> tuple[SplitFeatures, float]:
    """The entries staged under ``local_root`` (any earlier copy removed), from an evicted
    cache; and the copy's seconds."""
    for entry in (shared.text, shared.objects):
        shutil.rmtree(local_root / entry.name, ignore_errors=True)
    evict(evicted)
    start = time.perf_counter()
    copies = [
        stage(entry, local_root, echo=lambda line: print(line, file=sys.stderr))
        for entry in (shared.text, shared.objects)
    ]
    seconds = time.perf_counter() - start
    if copies != [local_root / shared.text.name, local_root / shared.objects.name]:
        raise RuntimeError(f"staging to {local_root} failed (see the warning above)")
    return SplitFeatures(*copies), seconds


def spread(passes: dict[str, list[float]]) -> float:
    """The mean over passes of (max - min) / median."""
    return float(np.mean([(max(r) - min(r)) / np.median(r) for r in passes.values()]))


def measure_once(
    shared: Shared, features: SplitFeatures, local_root: Path, orders: list[list[np.ndarray]]
) -> dict:
    """Stage, read each place whole, then ``len(orders)`` interleaved rounds of the passes."""
    on_share = SplitFeatures(shared.read / features.text.name, shared.read / features.objects.name)
    shared_files = entry_files(features, shared.evict)
    local, seconds = staged(on_share, local_root, shared_files)
    local_files = entry_files(features, (local_root,))
    entry_bytes = sum(p.stat().st_size for p in local_files)
    reads = {
        "shared": sequential_read(entry_files(features, (shared.read,)), shared_files),
        "local": sequential_read(local_files, local_files),
    }
    passes: dict[str, list[float]] = {name: [] for name in PASSES}
    left = 0
    for order in orders:
        for place, source, files in (
            ("shared", on_share, shared_files),
            ("local", local, local_files),
        ):
            cold, warm, resident_bytes = cold_and_warm(source, order, files)
            passes[f"{place}_cold"].append(round(cold, 1))
            passes[f"{place}_warm"].append(round(warm, 1))
            left = max(left, resident_bytes)
            print(
                json.dumps({place: {"cold": round(cold, 1), "warm": round(warm, 1)}}),
                file=sys.stderr,
                flush=True,
            )
    return {
        "staging": {"seconds": round(seconds, 1), "MB_per_s": round(entry_bytes / MB / seconds, 1)},
        "sequential_read_cold_MB_per_s": {k: round(v, 1) for k, v in reads.items()},
        "resident_after_evict_bytes": left,
        "passes_items_per_s": passes,
        "spread": round(spread(passes), 3),
    }


def summary(best: dict, bytes_per_item: float) -> dict:
    """Medians of the kept measurement, in items/s and MB/s read."""
    items = {k: round(float(np.median(v)), 1) for k, v in best["passes_items_per_s"].items()}
    return {
        "items_per_s": items,
        "MB_per_s": {k: round(v * bytes_per_item / MB, 1) for k, v in items.items()},
        "cold_over_warm": {
            place: round(items[f"{place}_cold"] / items[f"{place}_warm"], 3)
            for place in ("shared", "local")
        },
        "local_over_shared_cold": round(items["local_cold"] / items["shared_cold"], 2),
        "bound_by": {
            place: "storage"
            if items[f"{place}_cold"] < items[f"{place}_warm"] / 2
            else "the copy into the batch"
            for place in ("shared", "local")
        },
    }


def batch_bytes_per_item(dataset: CachedVCRDataset, order: list[np.ndarray]) -> float:
    """Bytes of ``gather``'s batches per item (its copies: the float16 rows, indexes, masks)."""
    total = sum(
        v.numel() * v.element_size() for b in order[:4] for v in gather(dataset, b).values()
    )
    return total / sum(len(b) for b in order[:4])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(ready, process: subprocess.Popen, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit status {process.poll()})")
        time.sleep(0.2)


def connectable(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def loopback_sshfs(export: Path, mount: Path, work: Path) -> Iterator[str]:
    """``export`` mounted at ``mount`` by sshfs, through an sshd on 127.0.0.1 with throwaway keys
    in ``work`` (the commands of the module docstring); both stopped, by pid, on exit."""
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", work / key], check=True
        )
    shutil.copyfile(work / "client_key.pub", work / "authorized_keys")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation folder
    port = free_port()
    settings = {
        "ListenAddress": "127.0.0.1",
        "HostKey": work / "host_key",
        "AuthorizedKeysFile": work / "authorized_keys",
        "PasswordAuthentication": "no",
        "StrictModes": "no",
        "PidFile": "none",
        "Subsystem": "sftp internal-sftp",
    }
    with open(work / "sshd.log", "w") as log:
        sshd = subprocess.Popen(
            [
                shutil.which("sshd") or "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
                "/dev/null",
                "-p",
                str(port),
                *(a for k, v in settings.items() for a in ("-o", f"{k}={v}")),
            ],
            stderr=log,
            start_new_session=True,
        )
    sshfs = None
    try:
        wait_for(lambda: connectable(port), sshd, "sshd")
        options = (
            f"{SSHFS_OPTIONS},IdentityFile={work / 'client_key'},Port={port},"
            "StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,"
            "LogLevel=ERROR"
        )
        sshfs = subprocess.Popen(
            ["sshfs", "-f", "-o", options, f"{getpass.getuser()}@127.0.0.1:{export}", str(mount)],
            start_new_session=True,
        )  # Ctrl-C: we unmount first
        wait_for(lambda: os.path.ismount(mount), sshfs, "sshfs")
        yield f"sshfs over loopback ssh (-o {SSHFS_OPTIONS}; no kernel_cache)"
    finally:
        if sshfs is not None:
            if subprocess.run(["fusermount", "-u", str(mount)], check=False).returncode:
                subprocess.run(["fusermount", "-u", "-z", str(mount)], check=False)  # busy
            with contextlib.suppress(subprocess.TimeoutExpired):
                sshfs.wait(10)
            if sshfs.poll() is None:
                sshfs.terminate()
                sshfs.wait()
        sshd.terminate()
        sshd.wait()


def shared_folder(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> Shared:
    """``--shared-mount``; else a loopback sshfs mount of ``tmp/export``; else that folder."""
    if args.shared_mount:
        folder = Path(tempfile.mkdtemp(prefix="read-speed-", dir=args.shared_mount))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        return Shared(
            folder,
            folder,
            (folder,),
            f"{args.shared_mount} (given; only this client's page cache evicted)",
        )
    export = tmp / "export"
    export.mkdir()
    if (
        args.sshfs
        and all(shutil.which(p) for p in ("sshd", "sshfs", "fusermount"))
        and os.path.exists("/dev/fuse")
    ):
        mount, work = tmp / "mount", tmp / "ssh"
        mount.mkdir()
        work.mkdir(mode=0o700)
        kind = stack.enter_context(loopback_sshfs(export, mount, work))
        return Shared(export, mount, (mount, export), kind)
    return Shared(export, export, (export,), "same local disk: no network filesystem here")


def measure(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> dict:
    load_at_start = os.getloadavg()[0]
    shared = shared_folder(args, tmp, stack)
    rng = np.random.default_rng(args.seed)
    features = write_cache(shared.write, vcr_lengths(args.questions, rng), args.dim, rng)
    dataset = CachedVCRDataset(features)
    sizes = item_sizes(dataset)
    orders = [
        epoch_order(sizes, args.batch_size, seed, bucket_batches=args.bucket_batches)
        for seed in range(args.rounds)
    ]
    entry_bytes = sum(p.stat().st_size for p in entry_files(features, (shared.write,)))
    copy_bytes = batch_bytes_per_item(dataset, orders[0])
    del dataset
    runs = [measure_once(shared, features, tmp / "local", orders) for _ in range(args.repeats)]
    best = min(runs, key=lambda run: run["spread"])
    return {
        "shared": shared.kind,
        "local": f"{tmp.parent} (staged by vcrnet.features.stage)",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": {
                "start": round(load_at_start, 2),
                "end": round(os.getloadavg()[0], 2),
            },
        },
        "questions": args.questions,
        "text_dim": args.dim,
        "batch_size": args.batch_size,
        "bucket_batches": args.bucket_batches,
        "batches_per_epoch": len(orders[0]),
        "rounds": args.rounds,
        "entry_MB": round(entry_bytes / MB, 1),
        "entry_bytes_per_item": round(entry_bytes / args.questions),
        "batch_bytes_per_item": round(copy_bytes),
        "evict": "posix_fadvise(POSIX_FADV_DONTNEED) on every file of both entries"
        + (", on the mount and on the folder it serves" if len(shared.evict) > 1 else "")
        + "; resident_after_evict_bytes: what mincore saw left",
        **summary(best, entry_bytes / args.questions),
        **best,
        "spread_of_each_repeat": [run["spread"] for run in runs],
        "note": (
            f"medians of {args.rounds} interleaved rounds; the whole measurement made "
            f"{args.repeats} times and the one with the least spread (mean of (max - min) "
            "/ median over the passes) kept; others may have been using this machine's "
            f"{os.cpu_count()} CPUs meanwhile. MB_per_s: items/s x entry bytes per item."
        ),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--questions", type=int, default=3000, help="questions in the entry (~0.85 MB each)"
    )
    parser.add_argument("--dim", type=int, default=768, help="text width (BERT-base: 768)")
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--bucket-batches", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of passes")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="whole measurements; the one with the least spread kept",
    )
    parser.add_argument(
        "--shared-mount",
        type=Path,
        metavar="DIR",
        help="a network mount to use as the shared folder [a loopback sshfs]",
    )
    parser.add_argument(
        "--no-sshfs",
        dest="sshfs",
        action="store_false",
        help="no loopback sshfs: read the temporary folder itself as 'shared'",
    )
    parser.add_argument("--tmp", type=Path, help="where to make the temporary folder [$TMPDIR]")
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unmount and remove on kill too
    tmp = Path(tempfile.mkdtemp(prefix="read-speed-", dir=args.tmp))
    needed = 2 * args.questions * BYTES_PER_QUESTION + 2**30
    if shutil.disk_usage(tmp).free < needed:
        shutil.rmtree(tmp)
        sys.exit(
            f"{tmp}: {shutil.disk_usage(tmp.parent).free / 1e9:.1f} GB free, "
            f"{needed / 1e9:.1f} GB needed"
        )
    try:
        with contextlib.ExitStack() as stack:  # unmounts and stops sshd before the removal
            report = measure(args, tmp, stack)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
