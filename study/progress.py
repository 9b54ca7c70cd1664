"""The study's progress in the terminal: trials done / running / pending and the best so far."""

from __future__ import annotations

import math
import time

from ray.tune import Callback


class Progress(Callback):
    def __init__(self, metric: str, echo=print):
        self.metric, self.echo = metric, echo
        self.start = time.monotonic()
        self.best: tuple[float, str, str] | None = None  # value, method, trial id
        self._last_line = ""

    def __getstate__(self) -> dict:
        return {**self.__dict__, "echo": print}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value) and (
                self.best is None or value > self.best[0]):
            method = trial.config.get("method") or trial.config.get("grid", {}).get("method", "?")
            self.best = (float(value), str(method), trial.trial_id)
        self._show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._show(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._show(trials, note=f"trial {trial.trial_id} failed")

    def _show(self, trials, note: str = "") -> None:
        counts = {"TERMINATED": 0, "RUNNING": 0, "PENDING": 0, "ERROR": 0, "PAUSED": 0}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        best = (f"best {self.metric} {self.best[0]:.3f} ({self.best[1]}, trial {self.best[2]})"
                if self.best else "no result yet")
        line = (f"[{time.monotonic() - self.start:5.0f}s] trials: {counts['TERMINATED']} done, "
                f"{counts['RUNNING']} running, {counts['PENDING'] + counts['PAUSED']} pending, "
                f"{counts['ERROR']} failed | {best}" + (f" | {note}" if note else ""))
        if line.split("] ", 1)[1] != self._last_line:
            self._last_line = line.split("] ", 1)[1]
            self.echo(line)
