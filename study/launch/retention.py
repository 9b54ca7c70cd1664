"""What a study leaves on disk: only what ``--resume`` needs.

A checkpoint of the ``small`` preset is ~27 MB (model and Adam state), of ``r2c`` an order of
magnitude more; Tune's defaults kept every trial's last two, and the trials' working copies
besides (an 8-trial study left 737 MB, a 24-trial one filled the disk). So:

- a running trial has one checkpoint in Tune's storage (``num_to_keep=1``), with its best
  epoch's weights so far (``best.pt``, a third of a checkpoint), and its working folder hands
  each epoch's checkpoint to Tune (moved, not copied);
- a trial that ends (finished, stopped early or failed) keeps nothing once the experiment's
  saved state records it as ended (``CheckpointPruner``), unless ``--keep-checkpoints`` or it is
  the best so far of its approach: those keep their checkpoint until the study ends, when
  ``MLflowTracker`` logs their ``best.pt`` to their runs and the pruner removes the rest; a
  stopped trial's process is killed mid-``report``, so what its working folder still holds is
  removed by the next trial on its node (``clear_dead_trials``) or, on the driver's node, by
  the pruner;
- Ray's session folders of processes that have exited are removed when a local Ray starts
  (``prune_ray_sessions``), all but the latest (its logs explain the last run).
"""

from __future__ import annotations

import fcntl
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from ray.tune import Callback
from ray.tune.experiment import Trial

from vcrnet.atomic import alive

OUTBOX = "outbox"  # a trial's working folder: the checkpoint being handed to Tune
ALIVE = ".alive"  # flock'd by the trial's process for its life


class CheckpointPruner(Callback):
    """Driver side: an ended trial's checkpoints removed from Tune's storage, and its working
    folder where this node has it; not at once, but once two snapshots of the experiment's state
    have recorded the trial as ended (a driver killed before that would restore the trial as
    unfinished, from a checkpoint no longer there). Tune asks its callbacks for their state right
    after it writes each snapshot (``get_state``).

    The best ended trials of each approach (``approach_of(trial.config)``; by their best
    ``metric``, ties kept) are held until a better one ends or the experiment does; when it ends,
    every ended trial's checkpoints go, after the callbacks before this one (``MLflowTracker``)
    logged what they keep. ``prune`` False (``--keep-checkpoints``): nothing is removed."""

    def __init__(self, metric: str, approach_of: Callable[[dict], str], prune: bool = True):
        self.metric, self.approach_of, self.prune = metric, approach_of, prune
        self._ended: list = []  # ended since the last snapshot
        self._recorded: list = []  # ended before it: the next snapshot has them ended
        self._held: dict[str, list] = {}  # approach -> its best ended trials so far
        # trial id -> its best finite value seen (Tune's own record, ``metric_analysis``, turns
        # NaN for good once a NaN is reported: max(nan, x) is nan)
        self._best: dict[str, float] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            self._best[trial.trial_id] = max(self._best.get(trial.trial_id, -math.inf), value)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended.append(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended.append(trial)  # called once retries are spent: a retry restores before

    def get_state(self) -> None:  # a snapshot was just written
        for trial in self._recorded:
            self._hold_or_prune(trial)
        self._recorded, self._ended = self._ended, []

    def on_experiment_end(self, trials, **info) -> None:
        for trial in trials:
            if trial.status in (Trial.TERMINATED, Trial.ERROR) and self.prune:
                _prune(trial)
        self._recorded, self._ended, self._held = [], [], {}

    def __getstate__(self) -> dict:  # saved with the experiment: no trial objects
        return {**self.__dict__, "_ended": [], "_recorded": [], "_held": {}, "_best": {}}

    def _hold_or_prune(self, trial) -> None:
        """Hold ``trial`` if it is at least as good as its approach's held ones (pruning those it
        beats), else prune it."""
        value = self._value(trial)
        held = self._held.setdefault(self.approach_of(trial.config), [])
        best = max((self._value(t) for t in held), default=-math.inf)
        if value < best or value == -math.inf:
            losers = [trial]
        else:
            losers = [t for t in held if self._value(t) < value]
            held[:] = [t for t in held if t not in losers] + [trial]
        if self.prune:
            for loser in losers:
                _prune(loser)

    def _value(self, trial) -> float:
        """The trial's best finite ``metric``: seen here, or (a trial restored by ``--resume``)
        in Tune's record of it."""
        recorded = trial.metric_analysis.get(self.metric, {}).get("max", -math.inf)
        recorded = (
            recorded if isinstance(recorded, int | float) and math.isfinite(recorded) else -math.inf
        )
        return max(self._best.get(trial.trial_id, -math.inf), recorded)


def _prune(trial) -> None:
    for checkpoint in Path(trial.path).glob("checkpoint_*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    try:
        working = Path(trial.storage.trial_working_directory)
    except RuntimeError:  # no trial folder yet
        return
    _clear_trial_files(working)


def hold_alive(working: Path):
    """Trial side: an open file flock'd for the trial's life (the kernel drops it when the process
    dies, however it dies); keep the returned object referenced."""
    file = (working / ALIVE).open("a")
    fcntl.flock(file, fcntl.LOCK_EX)
    return file


def clear_dead_trials(working: Path) -> None:
    """Trial side: the checkpoints left in this node's other trial folders whose process is gone
    (their ``.alive`` no longer locked)."""
    for other in working.parent.iterdir():
        marker = other / ALIVE
        if other == working or not marker.is_file():
            continue
        with marker.open("a") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            _clear_trial_files(other)


def _clear_trial_files(working: Path) -> None:
    shutil.rmtree(working / OUTBOX, ignore_errors=True)
    for leftover in (working / "run").glob("*.pt"):
        leftover.unlink(missing_ok=True)


SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_(\d+)$")


def prune_ray_sessions(temp_dir: Path) -> list[Path]:
    """Remove the session folders under Ray's ``temp_dir`` whose starting process has exited
    (its pid ends the folder's name), all but the latest; returns those removed."""
    if not temp_dir.is_dir():
        return []
    ended = sorted(
        p
        for p in temp_dir.iterdir()
        if (m := SESSION.match(p.name)) and not p.is_symlink() and not alive(int(m.group(1)))
    )
    for session in ended[:-1]:
        shutil.rmtree(session, ignore_errors=True)
    return ended[:-1]
