"""The catalog of a home's studies: ``vcr-study studies`` lists them (state, trials, best, disk),
``vcr-study delete`` removes one.

A study is its files (``paths.py``: ``studies/<name>/``, ``ray_results/<name>/``,
``reports/<name>/``, and with a local tracking store its artifacts, ``mlartifacts/<name>/``) and
its MLflow experiment, named like the study (``study.tracking``). The feature cache is shared by
every study and belongs to none: it is never counted or removed here.

MLflow keeps a deleted experiment, name included, until ``mlflow gc``: creating an experiment of
that name then fails (``tracking.create_study`` refuses the name too). So a deleted study's
experiment is first renamed to a tombstone (``<name>.deleted-YYYYmmdd-HHMMSS``), and the name is
free for a new study at once. Imports MLflow (through ``study.tracking``), not Ray or torch.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from study.store import paths, record
from study.tracking import (
    FAILED_RUN,
    FINISHED,
    KILLED,
    PARENT,
    RUNNING,
    STUDY_ROLE,
    MlflowException,
    absolute_uri,
    best_metric,
    best_of_each,
    is_local,
    local_artifacts,
    local_store_file,
    open_client,
    redact,
    retire,
    trial_runs,
)
from vcrnet.errors import InputError, first_line
from vcrnet.metrics import OBJECTIVE

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Experiment
    from mlflow.tracking import MlflowClient

ACTIVE = "active"  # mlflow.entities.LifecycleStage.ACTIVE

STATES = {
    FINISHED: "finished",
    KILLED: "interrupted",
    RUNNING: "interrupted",
    FAILED_RUN: "failed",
}  # the parent run's status -> the study's state (unless running)
RESUME_HINT = "interrupted: continue one with `vcr-study launch --name NAME --resume`"


class Best(NamedTuple):
    value: float  # the best dev_q2ar (OBJECTIVE) of any trial, at its best epoch
    approach: str  # a method, or a labelled grid row
    method: str


@dataclass(frozen=True)
class StudyRow:
    name: str
    state: str  # running, finished, interrupted, failed, or "unknown (<why>)"
    trials: int | None  # trial runs in MLflow (None: not known)
    best: Best | None
    disk_bytes: int  # every file of the study (not the shared feature cache)


def study_rows(echo: Callable[[str], None] = lambda line: None) -> list[StudyRow]:
    """Every study of this home (``paths.home()``), by name: a folder under ``studies/``, with a
    record or not. Each tracking store is opened once; one that cannot be read makes its studies
    "unknown (<why>)", said once through ``echo``, and the others are listed all the same."""
    clients: dict[str, MlflowClient | InputError] = {}
    return [_row(name, clients, echo) for name in _names()]


def format_table(rows: list[StudyRow]) -> str:
    """The rows as a table (state last: an unknown one says why), and how to resume."""
    if not rows:
        return f"no studies under {paths.home()}"
    cells = [("NAME", "TRIALS", f"BEST {OBJECTIVE}", "DISK", "STATE")]
    cells += [
        (
            r.name,
            "-" if r.trials is None else str(r.trials),
            _best_text(r.best),
            human_size(r.disk_bytes),
            r.state,
        )
        for r in rows
    ]
    width = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = [
        f"{name:<{width[0]}}  {trials:>{width[1]}}  {best:<{width[2]}}  {disk:>{width[3]}}  {state}"
        for name, trials, best, disk, state in cells
    ]
    if any(r.state == "interrupted" for r in rows):
        lines += ["", RESUME_HINT]
    return "\n".join(lines)


def human_size(size: int) -> str:
    """Bytes in decimal units: 512 B, 12.3 MB, 1.2 GB."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if round(value, 1) < 1000 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def describe_deletion(name: str, tracking_uri: str | None = None) -> str:
    """What ``delete_study`` would remove, in one line for the CLI to confirm (it asks
    ``f"{describe_deletion(...)}?"``), e.g. "delete study g1: 3 folders (1.2 GB) and MLflow
    experiment g1". Refused like ``delete_study``: a running study, a name found nowhere."""
    target = _target(name, tracking_uri)
    if record.is_running(name):
        raise InputError(f"--name {name}: the study is running; wait for it, or stop that process")
    parts = []
    if target.folders:
        size = sum(disk_bytes(p) for p in target.folders)
        count = len(target.folders)
        parts.append(f"{count} folder{'s' * (count != 1)} ({human_size(size)})")
    if target.experiment is not None:
        parts.append(f"MLflow experiment {target.experiment.name}{target.where}{target.note}")
    text = f"delete study {name}: {' and '.join(parts)}"
    if target.experiment is None:
        text += f"; no MLflow experiment of it in {redact(target.uri)}"
    return text


def delete_study(name: str, tracking_uri: str | None = None) -> list[str]:
    """Remove study ``name`` whole; returns a line per thing removed.

    A study of this home is removed from the tracking store its record names (``tracking_uri``
    is not used then): its experiment (renamed to a tombstone, then deleted, so that the name
    can be used again), then its folders, under the study's lock so that no launch starts it
    meanwhile. A name with no study in this home is looked up in ``tracking_uri`` (default:
    this home's store): its experiment is deleted, and its artifacts folder if under this home.
    Refused in one line while the study runs, or where the name is found nowhere."""
    record.check_name(name)
    if not paths.study_dir(name).is_dir():
        return _delete(_target(name, tracking_uri))
    with record.running(name):  # refused if a launch holds it; it is removed with the folder
        return _delete(_target(name, tracking_uri))


# --- listing --------------------------------------------------------------------------------
def _names() -> list[str]:
    """Every folder under studies/ (``record.names()`` has only those with a record: a launch
    holds its study's lock before the record exists, and a launch that failed then leaves a
    folder that takes the name)."""
    studies = paths.studies_root()
    return sorted(p.name for p in studies.iterdir() if p.is_dir()) if studies.is_dir() else []


def _row(name: str, clients: dict, echo: Callable[[str], None]) -> StudyRow:
    running = record.is_running(name)
    state, trials, best, experiment, uri = "running", None, None, None, None
    try:
        uri, parent = _record_refs(name, lenient=False)
        if parent is None:
            raise InputError("no study.json: its launch stopped before the study started")
        client = _client(uri, clients, echo)
        run = client.get_run(parent)
        experiment = client.get_experiment(run.info.experiment_id)
        if experiment.lifecycle_stage != ACTIVE:
            raise InputError(f"its MLflow experiment {experiment.name} is deleted")
        runs = trial_runs(client, parent)
        trials, best = len(runs), _best(runs)
        if not running:
            state = STATES.get(run.info.status, run.info.status.lower())
    except Exception as error:  # noqa: BLE001 - one unreadable study must not hide the others
        if not running:
            state = f"unknown ({first_line(error, 160)})"
    disk = sum(disk_bytes(p) for p in _folders(name, experiment, uri))
    return StudyRow(name, state, trials, best, disk)


def _client(uri: str, clients: dict, echo: Callable[[str], None]) -> MlflowClient:
    """The one client of the store at ``uri``; raises why it cannot be read (every time)."""
    if uri not in clients:
        try:
            client = open_client(uri)
            if client is None:
                raise InputError(f"no tracking store at {local_store_file(uri)}")
            clients[uri] = client
        except InputError as error:
            clients[uri] = error
            echo(f"cannot read the tracking store {redact(uri)}: {error}")
    found = clients[uri]
    if isinstance(found, InputError):
        raise found
    return found


def _best(runs: pd.DataFrame) -> Best | None:
    column = f"metrics.{best_metric(OBJECTIVE)}"  # what the tracker logs: each trial's best so far
    best = best_of_each(runs, column)
    if best.empty:
        return None
    row = best.iloc[0]
    return Best(float(row[column]), str(row["label"]), str(row["method"]))


def _best_text(best: Best | None) -> str:
    if best is None:
        return "-"
    method = f" ({best.method})" if best.method != best.approach else ""
    return f"{best.value:.4f} {best.approach}{method}"


# --- deleting -------------------------------------------------------------------------------
@dataclass
class _Target:
    """What a study name holds: this home's folders of it, its experiment in a tracking store."""

    name: str
    uri: str
    client: MlflowClient | None
    experiment: Experiment | None
    folders: list[Path]  # those that exist
    note: str = ""  # about the experiment, for the confirmation

    @property
    def where(self) -> str:  # the store, unless it is this home's own
        own = paths.default_tracking_uri(paths.home())
        return "" if self.uri == own else f" in {redact(self.uri)}"


def _target(name: str, tracking_uri: str | None) -> _Target:
    record.check_name(name)
    uri, parent = _record_refs(name, lenient=True)
    uri = uri or absolute_uri(tracking_uri or paths.default_tracking_uri(paths.home()))
    client = open_client(uri)  # None: a sqlite store that does not exist holds nothing
    experiment, note = None, ""
    try:
        if client is not None:
            experiment = _experiment(client, name, parent)
        if experiment is not None:
            note = _note(client, experiment, has_record=parent is not None)
    except MlflowException as error:
        raise InputError(
            f"--name {name}: the tracking store {redact(uri)} cannot be read "
            f"({first_line(error)}); nothing was deleted"
        ) from None
    folders = [p for p in _folders(name, experiment, uri) if p.exists() or p.is_symlink()]
    if not folders and experiment is None:
        raise InputError(
            f"--name {name}: no such study in {paths.home()} or in the tracking store {redact(uri)}"
        )
    return _Target(name, uri, client, experiment, folders, note)


def _experiment(client: MlflowClient, name: str, parent: str | None) -> Experiment | None:
    """A recorded study's experiment is the one holding its parent run (never another of the
    same name: that may be another home's study); an unrecorded one's, the one of its name."""
    if parent is None:
        return client.get_experiment_by_name(name)  # a deleted one too: it holds the name
    try:
        return client.get_experiment(client.get_run(parent).info.experiment_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _note(client: MlflowClient, experiment: Experiment, has_record: bool) -> str:
    if experiment.lifecycle_stage != ACTIVE:
        return " (deleted already, but its name is still taken)"
    if has_record:  # a running study of this home holds its lock: refused before this
        return ""
    live = client.search_runs(
        [experiment.experiment_id],
        f"tags.{STUDY_ROLE} = '{PARENT}' and attributes.status = '{RUNNING}'",
        max_results=1,
    )
    return (
        " (its study run is marked running: stop any launch of it elsewhere first)" if live else ""
    )


def _delete(target: _Target) -> list[str]:
    lines = []
    if target.experiment is not None:  # first: if MLflow refuses, nothing else is gone
        tombstone = retire(target.client, target.experiment)
        lines.append(
            f"deleted MLflow experiment {target.experiment.name} (id "
            f"{target.experiment.experiment_id}){target.where}, renamed {tombstone} "
            "until `mlflow gc`; the name is free again"
        )
    for path in target.folders:  # studies/<name>/ first: its lock goes with it
        lines.append(f"removed {path} ({human_size(disk_bytes(path))})")
        _remove(path)
    return lines


def _remove(path: Path) -> None:
    home = paths.home()
    if not path.absolute().is_relative_to(home) or path.absolute() == home:
        raise AssertionError(f"{path} is not inside {home}")  # never: names are checked
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


# --- shared ---------------------------------------------------------------------------------
def _record_refs(name: str, lenient: bool) -> tuple[str | None, str | None]:
    """The tracking URI and parent run id of study ``name``'s record; (None, None) without one.
    A record ``store.load`` refuses (an earlier vcr-study's) is read for these two all the same;
    ``lenient``: an unreadable one counts as none (it is being deleted)."""
    path = paths.record_path(name)
    if not path.is_file():
        return None, None
    try:
        options, parent = record.load(name)
    except InputError:
        try:
            saved = json.loads(path.read_text())
            options = record.LaunchOptions(tracking_uri=saved.get("tracking_uri"))
            parent = saved["parent_run_id"]
        except (OSError, ValueError, KeyError):
            if lenient:
                return None, None
            raise InputError(f"{path}: not a study record") from None
    return record.tracking_uri(options), parent


def _folders(name: str, experiment: Experiment | None, uri: str | None) -> list[Path]:
    """The study's folders (existing or not), studies/<name>/ first: its record and lock."""
    folders = [paths.study_dir(name), paths.experiment_dir(name), paths.reports_dir(name)]
    artifacts = _local_artifacts(experiment) if experiment is not None else None
    if experiment is None and uri is not None and is_local(uri):
        artifacts = paths.artifacts_dir(name)  # where the study's experiment was made
    return folders + ([artifacts] if artifacts is not None else [])


def _local_artifacts(experiment: Experiment) -> Path | None:
    """The experiment's artifacts folder if it is on this disk under this home, else None."""
    path = local_artifacts(experiment.artifact_location)
    home = paths.home()
    return path if path is not None and path.is_relative_to(home) and path != home else None


def disk_bytes(path: Path) -> int:
    """The bytes of the files under ``path`` (links are not followed)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size if path.exists() or path.is_symlink() else 0
    total = 0
    for folder, _, files in os.walk(path):
        for file in files:
            try:
                total += os.lstat(os.path.join(folder, file)).st_size
            except FileNotFoundError:  # removed while counting (a running study's checkpoint)
                pass
    return total
