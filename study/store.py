"""A study's store: where its files go, and its record (``study.json``), which ``--resume``,
``best``, ``ablations`` and ``rerun`` read.

Where things go (all absolute, under ``builtin.home()``):

- ``studies/<name>/study.json``: the record, the launch options (resolved, features included) and
  the study's MLflow parent run id, written at once when that run exists (``save``);
- ``studies/<name>/optuna.journal``: the Optuna study (optuna-dashboard reads it);
- ``ray_results/<name>/``: Ray Tune's experiment and the trials' checkpoints;
- ``reports/<name>/``: what ``ablations`` and ``rerun`` write;
- ``mlflow.db`` and ``mlartifacts/``: the MLflow store (or ``--tracking-uri``).
"""

from __future__ import annotations

import dataclasses
import json
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

    def check(self) -> None:
        checks = [(self.trials >= 1, "--trials", "at least 1"),
                  (self.concurrent >= 1, "--concurrent", "at least 1"),
                  (self.cpus_per_trial > 0, "--cpus-per-trial", "positive"),
                  (self.gpus_per_trial >= 0, "--gpus-per-trial", "0 or more"),
                  (self.searcher in SEARCHERS, "--searcher", f"one of {', '.join(SEARCHERS)}"),
                  (self.grace_period >= 1, "--grace-period", "at least 1"),
                  (self.max_failures >= 0, "--max-failures", "0 or more")]
        for ok, option, expected in checks:
            if not ok:
                raise InputError(f"{option}: must be {expected}")
        if self.name and not all(c.isalnum() or c in "-_." for c in self.name):
            raise InputError(f"--name {self.name!r}: use letters, digits, '-', '_' and '.'")


class StudyRecord(NamedTuple):
    """``study.json``: the options ``--resume`` continues with, and the parent run in MLflow."""

    options: LaunchOptions
    parent_run_id: str


def study_dir(name: str) -> Path:
    return _studies() / name


def record_path(name: str) -> Path:
    return study_dir(name) / "study.json"


def journal_path(name: str) -> Path:
    return study_dir(name) / "optuna.journal"


def storage_root() -> Path:
    """Ray Tune's storage path: every study's experiment folder is under it."""
    return builtin.home() / "ray_results"


def experiment_dir(name: str) -> Path:
    return storage_root() / name


def reports_dir(name: str) -> Path:
    return builtin.home() / "reports" / name


def tracking_uri(options: LaunchOptions) -> str:
    from study.tracking import default_tracking_uri

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
        known = sorted(p.name for p in _studies().glob("*") if p.is_dir())
        raise InputError(f"--name {name}: no such study under {builtin.home()}"
                         + (f" (there are: {', '.join(known)})" if known else ""))
    saved = json.loads(path.read_text())
    if "features" not in saved:  # before 2026-11-28: selected on val, features not recorded
        raise InputError(f"--name {name}: made by an earlier vcr-study (it selected on val and "
                         "did not record its features): launch a new study")
    parent = saved.pop("parent_run_id")
    return StudyRecord(LaunchOptions(**saved), parent)


def _studies() -> Path:
    return builtin.home() / "studies"
