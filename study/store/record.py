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
# The layout of study/ a record was written under. Tune pickles the experiment's callbacks and
# searcher by their module paths, which changed when study/ became rooms (2026-12-07): a study
# made before that is read (best, ablations, studies) but not resumed (``check_resumable``).
LAYOUT = 2


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

    def check(self) -> None:
        checks = [
            (self.trials >= 1, "--trials", "at least 1"),
            (self.concurrent >= 1, "--concurrent", "at least 1"),
            (self.cpus_per_trial > 0, "--cpus-per-trial", "positive"),
            (self.gpus_per_trial >= 0, "--gpus-per-trial", "0 or more"),
            (self.searcher in SEARCHERS, "--searcher", f"one of {', '.join(SEARCHERS)}"),
            (self.grace_period >= 1, "--grace-period", "at least 1"),
            (self.max_failures >= 0, "--max-failures", "0 or more"),
        ]
        for ok, option, expected in checks:
            if not ok:
                raise InputError(f"{option}: must be {expected}")
        if self.name:
            check_name(self.name)


def check_name(name: str) -> None:
    """A study name, so that its paths stay inside its home's folders: letters, digits, '-',
    '_' and '.', not '.' first."""
    if not name or name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"--name {name!r}: use letters, digits, '-', '_' and '.', not '.' first")


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
    saved = json.loads(path.read_text())
    if "features" not in saved:  # before 2026-11-28: selected on val, features not recorded
        raise InputError(
            f"--name {name}: made by an earlier vcr-study (it selected on val and "
            "did not record its features): launch a new study"
        )
    parent = saved.pop("parent_run_id")
    saved.pop("layout", None)
    return StudyRecord(LaunchOptions(**saved), parent)


def check_resumable(name: str) -> None:
    """Study ``name`` (its record loads) is one whose Tune state this vcr-study can restore: one
    written under this ``LAYOUT`` (records from before it have none)."""
    if json.loads(paths.record_path(name).read_text()).get("layout", 1) < LAYOUT:
        raise InputError(
            f"--name {name}: made by an earlier vcr-study, whose Ray Tune state "
            "names modules that have moved: it cannot be resumed; `vcr-study best` and "
            "`vcr-study ablations` still read it; launch a new study to go on"
        )
