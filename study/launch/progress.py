"""The study's progress in the terminal: trials done / running / pending and the best so far."""

from __future__ import annotations

import math
import numbers
import time

from ray.tune import Callback

from study.search import trial_values

Best = tuple[float, str, str]  # value, method, trial id


class Progress(Callback):
    """A line whenever the counts or the best ``metric`` (higher is better) change.

    The best is read from the trials themselves, each of which keeps the highest value it
    reported (Tune's ``trial.metric_analysis[metric]["max"]``, saved with the trial): after
    ``launch --resume`` the trials finished before the restart never report again, and this
    callback comes back from the experiment state as it was at its last save, or new. The best
    result this callback was shown is kept too: Tune calls ``on_trial_result`` before it adds the
    result to the trial, and a NaN report turns a trial's maximum into NaN (``max(nan, x)``)."""

    def __init__(self, metric: str, echo=print):
        self.metric, self.echo = metric, echo
        self.start = time.monotonic()
        self.best: Best | None = None
        self._last_line = ""

    def __getstate__(self) -> dict:
        return {**self.__dict__, "echo": print}

    def __setstate__(self, state: dict) -> None:  # restored: time counts from this start
        self.__dict__.update(state, start=time.monotonic())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.best = _better(self.best, _candidate(result.get(self.metric), trial))
        self._show(trials)

    # Tune calls these before it sets the trial's status: the trial is counted as it ends
    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._show(trials, ended=(trial, "TERMINATED"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._show(trials, note=f"trial {trial.trial_id} failed", ended=(trial, "ERROR"))

    def _show(self, trials, note: str = "", ended: tuple | None = None) -> None:
        counts = {"TERMINATED": 0, "RUNNING": 0, "PENDING": 0, "ERROR": 0, "PAUSED": 0}
        for t in trials:
            status = ended[1] if ended and t is ended[0] else t.status
            counts[status] = counts.get(status, 0) + 1
            self.best = _better(
                self.best, _candidate(t.metric_analysis.get(self.metric, {}).get("max"), t)
            )
        best = (
            f"best {self.metric} {self.best[0]:.3f} ({self.best[1]}, trial {self.best[2]})"
            if self.best
            else "no result yet"
        )
        line = (
            f"[{time.monotonic() - self.start:5.0f}s] trials: {counts['TERMINATED']} done, "
            f"{counts['RUNNING']} running, {counts['PENDING'] + counts['PAUSED']} pending, "
            f"{counts['ERROR']} failed | {best}" + (f" | {note}" if note else "")
        )
        if line.split("] ", 1)[1] != self._last_line:
            self._last_line = line.split("] ", 1)[1]
            self.echo(line)


def _candidate(value, trial) -> Best | None:
    """``value`` of ``trial`` as a best, if it is a finite number."""
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    method = trial_values(trial.config).get("method", "?")
    return float(value), str(method), trial.trial_id


def _better(best: Best | None, other: Best | None) -> Best | None:
    return other if other is not None and (best is None or other[0] > best[0]) else best
