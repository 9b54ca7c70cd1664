"""The progress line's best so far, driven with Ray Tune's own ``Trial`` objects (no Ray
started): results go in through ``Trial.update_last_result`` in the order Tune's controller
uses (callbacks first, then the trial), and a restart goes through the trial's saved json state
as ``Tuner.restore`` reads it back."""

from __future__ import annotations

import pickle

import pytest
from ray.tune.experiment import Trial

from study.launch.progress import Progress

METRIC = "val_q2ar"


def make_trial(trial_id: str, method: str) -> Trial:
    trial = Trial("vcr_trial", config={"method": method}, trial_id=trial_id, stub=True)
    trial.create_placement_group_factory()  # as TuneController.add_trial does
    trial.set_status(Trial.RUNNING)
    return trial


def report(progress: Progress, trials: list[Trial], trial: Trial, value: float) -> None:
    """One result, as TuneController._on_training_result hands it on."""
    step = trial.last_result.get("training_iteration", 0) + 1
    result = {METRIC: value, "training_iteration": step}
    progress.on_trial_result(iteration=step, trials=trials, trial=trial, result=result)
    trial.update_last_result(result)


def restored(trial: Trial) -> Trial:
    """``trial`` as TuneController._restore_trials makes it from the experiment state."""
    state, run_metadata = trial.get_json_state()
    copy = Trial.from_json_state(state, stub=True)
    copy.restore_run_metadata(run_metadata)
    return copy


@pytest.mark.parametrize("callback", ["new", "saved before the best"])
def test_the_best_counts_trials_finished_before_a_restart(callback):
    first, lines = Progress(METRIC, echo=lambda line: None), []
    done, cut = make_trial("done_1", "gumbel"), make_trial("cut_2", "softmax")
    report(first, [done, cut], cut, 0.20)
    saved = pickle.dumps(first)  # the experiment state's copy, before the best result
    for value in (0.30, 0.51, 0.45):
        report(first, [done, cut], done, value)
    done.set_status(Trial.TERMINATED)
    assert first.best == (0.51, "gumbel", "done_1")

    # the driver is killed; --resume: the trials from their saved state, the callback new or
    # as saved; the finished trial never reports again
    trials = [restored(done), restored(cut)]
    assert [t.status for t in trials] == ["TERMINATED", "PENDING"]
    progress = Progress(METRIC) if callback == "new" else pickle.loads(saved)
    progress.echo = lines.append
    trials[1].set_status(Trial.RUNNING)
    report(progress, trials, trials[1], 0.30)
    assert lines[-1].endswith(
        "trials: 1 done, 1 running, 0 pending, 0 failed | "
        f"best {METRIC} 0.510 (gumbel, trial done_1)"
    ), lines


def test_a_nan_result_is_never_the_best():
    lines = []
    progress = Progress(METRIC, echo=lines.append)
    a, b = make_trial("a_1", "reinforce"), make_trial("b_2", "teacher")
    trials = [a, b]
    report(progress, trials, a, float("nan"))
    assert lines[-1].endswith("| no result yet")
    report(progress, trials, b, 0.40)
    report(progress, trials, b, float("nan"))  # Tune's maximum for b is now NaN ...
    report(progress, trials, a, float("inf"))
    report(progress, trials, b, 0.25)  # ... and then 0.25
    assert b.metric_analysis[METRIC]["max"] == 0.25
    assert lines[-1].endswith(f"| best {METRIC} 0.400 (teacher, trial b_2)"), lines
    # a restart with a trial whose every result was NaN
    again = Progress(METRIC, echo=lines.append)
    again.on_trial_complete(iteration=1, trials=[restored(a)], trial=a)
    assert lines[-1].endswith("| no result yet"), lines


class Clock:
    """``time.monotonic`` for the progress module, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_heartbeat_says_what_runs_and_why_trials_wait_at_least_once_a_minute(monkeypatch):
    from study.launch import progress as module

    clock = Clock()
    monkeypatch.setattr(module.time, "monotonic", clock)
    lines: list[str] = []
    asked: list[dict] = []

    def why_waiting(resources: dict) -> str:
        asked.append(resources)
        return "each asks 4 CPU; no node has that (the largest: 2 CPUs, 0 GPUs)"

    progress = Progress(METRIC, echo=lines.append, why_waiting=why_waiting)
    running, waiting = make_trial("run_1", "softmax"), make_trial("wait_2", "gumbel")
    waiting.set_status(Trial.PENDING)
    trials = [running, waiting]
    report(progress, trials, running, 0.2)
    running.last_result["epoch"] = 3
    said = len(lines)
    clock.now += module.HEARTBEAT_SECONDS - 1
    progress.on_step(1, trials)
    assert len(lines) == said  # nothing yet: under a minute of silence
    clock.now += 2
    progress.on_step(2, trials)
    assert len(lines) == said + 1
    beat = lines[-1]
    assert "still working: 1 trial running, the slowest at epoch 3" in beat
    assert "1 pending (each asks 4 CPU; no node has that" in beat
    assert asked == [{"CPU": 1.0}]  # the pending trial's own request (Tune's default)
    progress.on_step(3, trials)
    assert len(lines) == said + 1  # once a minute, not every step
    clock.now += module.HEARTBEAT_SECONDS
    progress.on_step(4, trials)
    assert len(lines) == said + 2
