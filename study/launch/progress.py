"""The study's progress in the terminal: trials done / running / pending and the best so far, and
a heartbeat at least once a minute while nothing else changes (what runs, and why trials wait)."""

from __future__ import annotations

import math
import numbers
import time

from ray.tune import Callback

from study.search import trial_values

Best = tuple[float, str, str]  # value, method, trial id
# Silence longer than this between two lines reads as a hang: a line at least this often (a
# trial-epoch of the r2c preset on 2 CPUs takes minutes, docs/benchmarks.md)
HEARTBEAT_SECONDS = 60.0


class Progress(Callback):
    """A line whenever the counts or the best ``metric`` (higher is better) change.

    The best is read from the trials themselves, each of which keeps the highest value it
    reported (Tune's ``trial.metric_analysis[metric]["max"]``, saved with the trial): after
    ``launch --resume`` the trials finished before the restart never report again, and this
    callback comes back from the experiment state as it was at its last save, or new. The best
    result this callback was shown is kept too: Tune calls ``on_trial_result`` before it adds the
    result to the trial, and a NaN report turns a trial's maximum into NaN (``max(nan, x)``)."""

    def __init__(self, metric: str, echo=print, why_waiting=None):
        self.metric, self.echo = metric, echo
        # a trial's resources -> why they cannot be had now (None: they can): cluster.why_waiting
        self.why_waiting = why_waiting
        self.start = self._said = time.monotonic()
        self.best: Best | None = None
        self._last_line = ""

    def __getstate__(self) -> dict:
        return {**self.__dict__, "echo": print}

    def __setstate__(self, state: dict) -> None:  # restored: time counts from this start
        now = time.monotonic()
        self.__dict__.update(state, start=now, _said=now)

    def on_step(self, iteration, trials, **info) -> None:
        """Tune's loop, a few times a second: the heartbeat, when nothing was said for a while."""
        if time.monotonic() - self._said >= HEARTBEAT_SECONDS:
            self._heartbeat(trials)

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
            self._say(line)

    def _heartbeat(self, trials) -> None:
        """Elapsed time, the trials running and the slowest one's epoch, and why trials wait."""
        running = [t for t in trials if t.status == "RUNNING"]
        pending = [t for t in trials if t.status in ("PENDING", "PAUSED")]
        parts = [f"[{time.monotonic() - self.start:5.0f}s] still working:"]
        if running:
            epochs = [int(t.last_result.get("epoch", 0) or 0) for t in running]
            parts.append(
                f"{len(running)} trial{'s' * (len(running) != 1)} running, the slowest at "
                f"epoch {min(epochs)}"
            )
        else:
            parts.append("no trial running")
        if pending:
            reason = self.why_waiting(_resources(pending[0])) if self.why_waiting else None
            parts.append(f"{len(pending)} pending" + (f" ({reason})" if reason else ""))
        self._say(" ".join(parts[:2]) + "".join(f"; {p}" for p in parts[2:]))

    def _say(self, line: str) -> None:
        self._said = time.monotonic()
        self.echo(line)


def _resources(trial) -> dict[str, float]:
    """What a trial asks Ray for (its placement group's bundles, summed)."""
    factory = getattr(trial, "placement_group_factory", None)
    return dict(factory.required_resources) if factory is not None else {}


def _candidate(value, trial) -> Best | None:
    """``value`` of ``trial`` as a best, if it is a finite number."""
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    method = trial_values(trial.config).get("method", "?")
    return float(value), str(method), trial.trial_id


def _better(best: Best | None, other: Best | None) -> Best | None:
    return other if other is not None and (best is None or other[0] > best[0]) else best
