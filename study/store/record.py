"""A study's record (``studies/<name>/study.json``): the launch options it runs with (resolved,
features included) and its MLflow parent run, written at once when that run exists; what
``--resume``, ``best``, ``ablations`` and ``rerun`` read. Also the study's lock (``running``) and
the one check of a study name (``check_name``), applied wherever a name becomes a path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from study.store import paths
from vcrnet.atomic import write_text
from vcrnet.errors import InputError

SEARCHERS = ("tpe", "random")
# What a record was written under; a study of an earlier one is read (best, ablations, studies)
# but not resumed (``check_resumable``): 2, Tune pickles the experiment's callbacks and searcher
# by their module paths, which changed when study/ became rooms; 3, trials train differently
# (a dev split carved by movie, a plain shuffle by default, the feature cache's version 4), so a
# resumed trial would not go on as it began (both 2026-12-07)
LAYOUT = 3
WHY_NOT_RESUMED = {
    1: "whose Ray Tune state names modules that have moved",
    2: "whose trials trained with a dev split carved by image and length-bucketed batches",
}
# Ray counts a resource in units of 1/10,000 (ray_constants' RESOURCE_UNIT_SCALING): a request
# that is not a whole number of units is rounded, 0.00001 CPU to none, which Ray then refuses
RAY_UNIT = 0.0001
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds below 2**32
MAX_NAME = 100  # a study name is a folder, an MLflow experiment and part of Tune's trial names


@dataclass
class LaunchOptions:
    name: str = ""  # "" -> study-YYYYmmdd-HHMMSS
    space: str = "default"
    trials: int = 8  # for a distribution space; a grid runs each of its trials once
    concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    searcher: str = "tpe"
    asha: bool = True
    grace_period: int = 1
    overrides: dict = field(default_factory=dict)  # --set, and --epochs
    seed: int = 0
    data: str | None = None
    cache: str | None = None
    features: dict | None = None  # FeatureSettings.to_dict(), resolved when the study starts
    address: str | None = None
    tracking_uri: str | None = None
    max_failures: int = 2
    local_cache: str | None = None  # a folder on each node's local disk the trials read the
    # cache from (copied there once per node); None: $VCR_STUDY_LOCAL_CACHE on the node, if set
    keep_checkpoints: bool = False  # keep every trial's last checkpoint (else: none once done)
    ray_temp_dir: str | None = None  # a local Ray's session folders (None: Ray's, /tmp/ray)
    ignore_free_space: bool = False  # start even where the free-space check refuses
    space_sha256: str | None = None  # the space file's digest when the study started: a resume
    # must train what its restored callbacks log (they hold the space as it was parsed then)

    def check(self) -> None:
        """Every option in its range, before anything is written (``launch`` and ``--dry-run``
        alike): one line naming the option."""
        cpus, gpus = self.cpus_per_trial, self.gpus_per_trial
        checks = [
            (self.trials >= 1, "--trials", "at least 1"),
            (self.concurrent >= 1, "--concurrent", "at least 1"),
            (cpus > 0, "--cpus-per-trial", "positive"),
            (_in_ray_units(cpus), "--cpus-per-trial", f"a multiple of {RAY_UNIT} (Ray's unit)"),
            (gpus >= 0, "--gpus-per-trial", "0 or more"),
            (_in_ray_units(gpus), "--gpus-per-trial", f"a multiple of {RAY_UNIT} (Ray's unit)"),
            (gpus <= 1 or gpus.is_integer(), "--gpus-per-trial", "a fraction of 1 or whole"),
            (self.searcher in SEARCHERS, "--searcher", f"one of {', '.join(SEARCHERS)}"),
            (self.grace_period >= 1, "--grace-period", "at least 1"),
            (self.max_failures >= 0, "--max-failures", "0 or more"),
            (0 <= self.seed <= MAX_SEED, "--seed", f"in 0..{MAX_SEED} (numpy's seeds)"),
        ]
        for ok, option, expected in checks:
            if not ok:
                raise InputError(f"{option}: must be {expected}")
        if self.name:
            check_name(self.name)


def check_name(name: str) -> None:
    """A study name, so that its paths stay inside its home's folders: letters, digits, '-',
    '_' and '.', not '.' first, at most ``MAX_NAME`` characters."""
    if not name or name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"--name {name!r}: use letters, digits, '-', '_' and '.', not '.' first")
    if len(name) > MAX_NAME:
        raise InputError(f"--name {name[:20]}...: {len(name)} characters, at most {MAX_NAME}")


def _in_ray_units(amount: float) -> bool:
    units = amount / RAY_UNIT
    return abs(units - round(units)) < 1e-6


class StudyRecord(NamedTuple):
    """``study.json``: the options ``--resume`` continues with, and the parent run in MLflow."""

    options: LaunchOptions
    parent_run_id: str


@contextlib.contextmanager
def running(name: str) -> Iterator[None]:
    """Mark study ``name`` as running for the block: an exclusive flock on ``studies/<name>/.lock``
    (the kernel drops it if this process dies), so that no second launch, ``--resume`` or
    ``delete`` acts on it meanwhile; refused in one line when another process holds it."""
    path = paths.lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            raise InputError(
                f"--name {name}: the study is running ({holder}); wait for it, or stop that process"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"launch pid {os.getpid()} on {socket.gethostname()}")
        file.flush()
        yield


def is_running(name: str) -> bool:
    """Whether a launch holds study ``name``'s lock now."""
    path = paths.lock_path(name)
    if not path.is_file():
        return False
    with path.open() as file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def names() -> list[str]:
    """The studies with a record in this home, sorted."""
    return sorted(p.parent.name for p in paths.studies_root().glob("*/study.json"))


def tracking_uri(options: LaunchOptions) -> str:
    return options.tracking_uri or paths.default_tracking_uri(paths.home())


def save(record: StudyRecord) -> None:
    """Write the record whole (a crash leaves the previous one, or none)."""
    path = paths.record_path(record.options.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        **dataclasses.asdict(record.options),
        "parent_run_id": record.parent_run_id,
        "layout": LAYOUT,
    }
    write_text(path, json.dumps(saved, indent=2, default=str))


def load(name: str) -> StudyRecord:
    """Study ``name``'s record; a missing or outdated one is one line naming what to do."""
    check_name(name)
    path = paths.record_path(name)
    if not path.is_file():
        known = names()
        raise InputError(
            f"--name {name}: no such study under {paths.home()}"
            + (f" (there are: {', '.join(known)})" if known else "")
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise InputError(f"{path}: not a study record ({type(error).__name__})") from None
    if not isinstance(saved, dict) or "parent_run_id" not in saved:
        raise InputError(f"{path}: not a study record (no parent_run_id)")
    if "features" not in saved:  # before 2026-11-28: selected on val, features not recorded
        raise InputError(
            f"--name {name}: made by an earlier vcr-study (it selected on val and "
            "did not record its features): launch a new study"
        )
    parent = saved.pop("parent_run_id")
    saved.pop("layout", None)
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(LaunchOptions)})
    if unknown:  # written by a newer vcr-study, or edited by hand
        raise InputError(f"{path}: not a study record of this vcr-study (unknown {unknown})")
    return StudyRecord(LaunchOptions(**saved), parent)


def check_resumable(name: str) -> None:
    """Study ``name`` (its record loads) is one whose Tune state and trials this vcr-study can go
    on with: one written under this ``LAYOUT`` (records from before layout 2 have none)."""
    layout = json.loads(paths.record_path(name).read_text()).get("layout", 1)
    if layout < LAYOUT:
        raise InputError(
            f"--name {name}: made by an earlier vcr-study, {WHY_NOT_RESUMED[layout]}: it "
            "cannot be resumed; `vcr-study best` and `vcr-study ablations` still read it; "
            "launch a new study to go on"
        )


def open_study(name: str):
    """Study ``name``'s tracking store, opened to read (a missing sqlite file is not created),
    and its parent run id: what every command that reads a study starts with."""
    from study import tracking

    options, parent = load(name)
    uri = tracking_uri(options)
    client = tracking.open_client(uri)
    if client is None:
        raise InputError(f"--name {name}: its tracking store {tracking.redact(uri)} is not there")
    return client, parent
