"""A study's store: where its files go, and its record (``study.json``), which ``--resume``,
``best``, ``ablations`` and ``rerun`` read.

Where things go (all absolute, under ``builtin.home()``):

- ``studies/<name>/study.json``: the record, the launch options (resolved, features included) and
  the study's MLflow parent run id, written at once when that run exists (``save``);
- ``studies/<name>/optuna.journal``: the Optuna study (optuna-dashboard reads it);
- ``studies/<name>/launch.log``: everything Ray, Tune, Optuna and MLflow printed (the terminal
  shows only the harness's own lines unless ``--verbose``);
- ``studies/<name>/.lock``: flock'd by the launch that runs the study (``running``);
- ``ray_results/<name>/``: Ray Tune's experiment and the trials' checkpoints;
- ``reports/<name>/``: what ``ablations`` and ``rerun`` write;
- ``mlflow.db`` and ``mlartifacts/``: the MLflow store (or ``--tracking-uri``).
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
from pathlib import Path
from typing import NamedTuple

from study import builtin
from vcrnet.atomic import write_text
from vcrnet.errors import InputError

SEARCHERS = ("tpe", "random")


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
        if self.name and (
            not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith(".")
        ):
            raise InputError(
                f"--name {self.name!r}: use letters, digits, '-', '_' and '.', not first"
            )


class StudyRecord(NamedTuple):
    """``study.json``: the options ``--resume`` continues with, and the parent run in MLflow."""

    options: LaunchOptions
    parent_run_id: str


def study_dir(name: str) -> Path:
    return studies_root() / name


def record_path(name: str) -> Path:
    return study_dir(name) / "study.json"


def journal_path(name: str) -> Path:
    return study_dir(name) / "optuna.journal"


def log_path(name: str) -> Path:
    return study_dir(name) / "launch.log"


@contextlib.contextmanager
def running(name: str) -> Iterator[None]:
    """Mark study ``name`` as running for the block: an exclusive flock on ``studies/<name>/.lock``
    (the kernel drops it if this process dies), so that no second launch, ``--resume`` or
    ``delete`` acts on it meanwhile; refused in one line when another process holds it."""
    path = study_dir(name) / ".lock"
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
    path = study_dir(name) / ".lock"
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
    return sorted(p.parent.name for p in studies_root().glob("*/study.json"))


def storage_root() -> Path:
    """Ray Tune's storage path: every study's experiment folder is under it."""
    return builtin.home() / "ray_results"


def experiment_dir(name: str) -> Path:
    return storage_root() / name


def reports_dir(name: str) -> Path:
    return builtin.home() / "reports" / name


def default_tracking_uri(home: Path) -> str:
    """The home's own MLflow store: a sqlite file beside the studies."""
    return f"sqlite:///{(home / 'mlflow.db').absolute()}"


def tracking_uri(options: LaunchOptions) -> str:
    return options.tracking_uri or default_tracking_uri(builtin.home())


def save(record: StudyRecord) -> None:
    """Write the record whole (a crash leaves the previous one, or none)."""
    path = record_path(record.options.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {**dataclasses.asdict(record.options), "parent_run_id": record.parent_run_id}
    write_text(path, json.dumps(saved, indent=2, default=str))


def load(name: str) -> StudyRecord:
    """Study ``name``'s record; a missing or outdated one is one line naming what to do."""
    path = record_path(name)
    if not path.is_file():
        known = names()
        raise InputError(
            f"--name {name}: no such study under {builtin.home()}"
            + (f" (there are: {', '.join(known)})" if known else "")
        )
    saved = json.loads(path.read_text())
    if "features" not in saved:  # before 2026-11-28: selected on val, features not recorded
        raise InputError(
            f"--name {name}: made by an earlier vcr-study (it selected on val and "
            "did not record its features): launch a new study"
        )
    parent = saved.pop("parent_run_id")
    return StudyRecord(LaunchOptions(**saved), parent)


def studies_root() -> Path:
    """Every study's folder is under it."""
    return builtin.home() / "studies"
