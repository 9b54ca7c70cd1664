"""Where a home's files go: every path of a study, the shared feature cache, the built-in data.

A home is ``./vcr-study-runs/`` (or ``$VCR_STUDY_HOME``), made absolute at once so that Ray
trials, which change directory, see the same paths::

    studies/<name>/study.json      the record (``record.py``): options, MLflow parent run
    studies/<name>/optuna.journal  the Optuna study (optuna-dashboard reads it)
    studies/<name>/launch.log      what Ray, Tune, Optuna and MLflow printed
    studies/<name>/.lock           flock'd by the launch (or finals) that runs the study
    studies/<name>/finals.json     the finals' options and finalists (``finals.py``)
    ray_results/<name>/            Ray Tune's experiment and the trials' checkpoints
    ray_results/<name>/finals/     the finals' Tune experiment
    reports/<name>/                what ``ablations``, ``finals`` and ``rerun`` write
    mlflow.db, mlartifacts/<name>/ the MLflow store (unless ``--tracking-uri``), its artifacts
    models/<run id>/               a tracking server's weights, fetched once
    throughput.json                measured seconds per training item (``--dry-run`` reads it)
    data/synthetic-seed0/          the built-in synthetic dataset, generated once
    cache/                         the feature cache every study shares
"""

from __future__ import annotations

import os
from pathlib import Path

from vcrnet.atomic import check_writable

SYNTHETIC_SEED = 0  # the built-in dataset's seed


def home() -> Path:
    return Path(os.environ.get("VCR_STUDY_HOME", "vcr-study-runs")).absolute()


def check_home() -> None:
    """The home is a folder this process can write, or can be made where it is named (checked
    before a command writes anything there)."""
    path = home()
    where = f"VCR_STUDY_HOME {path}" if "VCR_STUDY_HOME" in os.environ else f"the home {path}"
    check_writable(path, where)


def default_data_dir() -> Path:
    return home() / "data" / f"synthetic-seed{SYNTHETIC_SEED}"


def default_cache_dir() -> Path:
    return home() / "cache"


def studies_root() -> Path:
    """Every study's folder is under it."""
    return home() / "studies"


def study_dir(name: str) -> Path:
    return studies_root() / name


def record_path(name: str) -> Path:
    return study_dir(name) / "study.json"


def journal_path(name: str) -> Path:
    return study_dir(name) / "optuna.journal"


def log_path(name: str) -> Path:
    return study_dir(name) / "launch.log"


def lock_path(name: str) -> Path:
    return study_dir(name) / ".lock"


def storage_root() -> Path:
    """Ray Tune's storage path: every study's experiment folder is under it."""
    return home() / "ray_results"


def experiment_dir(name: str) -> Path:
    return storage_root() / name


def finals_path(name: str) -> Path:
    return study_dir(name) / "finals.json"


def finals_experiment_dir(name: str) -> Path:
    """The finals' Tune experiment: ``finals`` under the study's own (``delete`` removes both)."""
    return experiment_dir(name) / "finals"


def reports_dir(name: str) -> Path:
    return home() / "reports" / name


def artifacts_root() -> Path:
    """A local MLflow store's artifacts (``vcr-study ui`` serves them)."""
    return home() / "mlartifacts"


def artifacts_dir(name: str) -> Path:
    """Study ``name``'s artifacts, with a local MLflow store."""
    return artifacts_root() / name


def models_dir(run_id: str) -> Path:
    """Where a tracking server's logged weights of run ``run_id`` are fetched to, once."""
    return home() / "models" / run_id


def throughput_file() -> Path:
    return home() / "throughput.json"


def default_tracking_uri(home: Path) -> str:
    """The home's own MLflow store: a sqlite file beside the studies."""
    return f"sqlite:///{(home / 'mlflow.db').absolute()}"
