"""A study's cost before it is launched (``--dry-run``, and the free-space check): trial-epochs,
wall time, GPU-hours, disk.

Pure functions, but for the measured speed (``throughput.py``) and the free-space reading::

    seconds = seconds_per_item(store.throughput_file(), ThroughputKey(fp, kind, preset, 16))
    plan = estimate(trials=8, epochs=4, grace=1, asha=True, concurrent=2, cpus=2,
                    cpus_per_trial=1, train_items=1350, seconds=seconds,
                    checkpoint=checkpoint_bytes(config, text_dim), disk_free=free_bytes(home))
    print("\\n".join(plan.lines()))
    plan.check_free_space(home)  # unless --ignore-free-space

Figures cited as "benchmarks.md:N" are from ``docs/benchmarks.md``, line N.
"""

from __future__ import annotations

import math
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from study.launch import throughput
from study.launch.throughput import ThroughputKey
from vcrnet.atomic import nearest_existing
from vcrnet.errors import InputError

if TYPE_CHECKING:
    from vcrnet.config import TrainConfig

# Ray Tune's ASHAScheduler default (ray/tune/schedulers/async_hyperband.py: reduction_factor=4),
# which the study's scheduler keeps (tuner.py).
ASHA_REDUCTION_FACTOR = 4.0

# --- time -------------------------------------------------------------------------------------
# The CPU figures are for a trial with the whole 2-core machine (torch's 2 threads). The `small`
# preset, batch 16, on the built-in data (1,350 training items after the dev split), softmax:
# 2 epochs of `fit` in 63 s wall, training at 46.2 and 50.8 items/s (benchmarks.md:341-355,
# benchmarks/cpu_train_speed.py). 63 s / (2 x 1,350) = 0.0233 s per training item per epoch,
# evaluation included. The methods span 0.021-0.031 s (docs/results.md: 6-epoch runs of 167-255 s).
CPU_SMALL_SECONDS = 63.0 / (2 * 1350)
# An epoch (training, dev and val evaluation, checkpoint) over its training alone, in that run:
# 63 s against 1,350/46.2 + 1,350/50.8 = 55.8 s of training.
EPOCH_OVER_TRAINING = 63.0 / (1350 / 46.2 + 1350 / 50.8)
CPU_THREADS_MEASURED = 2
# No CPU figure for `r2c`: small's scaled by the parameter count at the built-in 384-d text
# (21,677,314 against 1,953,602: 11.1x; a word row's compute is about its LSTM and MLP weights).
CPU_R2C_SECONDS = CPU_SMALL_SECONDS * 21_677_314 / 1_953_602
# No CPU figure for `tiny` (15x fewer parameters than small): small's, as an upper bound.
CPU_FALLBACK = {
    "small": (
        CPU_SMALL_SECONDS,
        "small, batch 16, 2 CPUs: 63 s for 2 epochs of 1,350 items (line 355)",
    ),
    "tiny": (CPU_SMALL_SECONDS, "no tiny figure; small's (line 355) as an upper bound"),
    "r2c": (CPU_R2C_SECONDS, "no r2c CPU figure; small's (line 355) x 11.1, the parameter ratio"),
}
# GPU: the `r2c` preset on an H200, softmax, batch 96, VCR-shaped padded batches: the model alone
# 1,009 training items/s (benchmarks.md:140-142; end to end with the loader not measured yet),
# times the CPU run's EPOCH_OVER_TRAINING for the evaluation.
GPU_FALLBACK = {
    ("cuda:NVIDIA H200", "r2c"): (
        EPOCH_OVER_TRAINING / 1009,
        "r2c on an H200, batch 96: 1,009 items/s, the model alone (line 141), +13% evaluation",
    ),
}
# Trials sharing one GPU (--gpus-per-trial 1/k): their aggregate items/s against one trial's, with
# CUDA MPS (ray_cluster.yaml starts it on every GPU worker): 1.91 for 2, 2.68 for 4 (the r2c
# preset on an H200, benchmarks.md:270-274); linear between, unknown beyond 4.
GPU_SHARING = {1: 1.0, 2: 1.91, 4: 2.68}
# The harness's own time: 935.6 s of study wall against 878.0 s of its 6 trials' epochs, one trial
# at a time (benchmarks.md:115-126): 57.6 s, of which Ray's start ~5 s (STYLE.md; `ray.init` in
# tests), the rest per trial (a worker, the model build, 4 checkpoint reports): 8.8 s.
RAY_START_SECONDS = 5.0
TRIAL_OVERHEAD_SECONDS = (935.6 - 878.0 - RAY_START_SECONDS) / 6

# --- disk -------------------------------------------------------------------------------------
# torch.save's zip record of a tensor (header, central directory entry, 64-byte alignment, name):
# ~280 bytes, and ~9.2 KB besides (the CPU RNG state's 5,056 bytes, config, scheduler, pickle);
# one epoch's metrics in the checkpoint's history ~2.8 KB. Measured on tiny and small checkpoints
# (270 tensors; 2 epochs of `fit` added 5.5 KB), torch 2.14: estimates within 0.1% of fit's files.
CHECKPOINT_BYTES_PER_TENSOR = 280
CHECKPOINT_FIXED_BYTES = 10_000
CHECKPOINT_BYTES_PER_EPOCH = 2_800
# A running trial at the moment of a report (retention.py): Tune's previous checkpoint, not yet
# pruned (num_to_keep=1), the epoch's files in the trial's outbox, and Tune's new copy.
RUNNING_CHECKPOINT_FILES = 3
# Logs and tracking: the MLflow sqlite store of a test study was 1.05-1.28 MB (184-1,280 metric
# rows: ~0.2 KB a row, ~31 rows a trial-epoch; measured 2026-11-28); an ablations report adds
# 4.8 MB (plotly.min.js); Tune's files besides checkpoints, 44 KB a 1-epoch trial (8 trials:
# 354 KB). Rounded up: 16 MB, and 1 MB a trial (~100 epochs of metrics and Tune's results).
LOG_BYTES = 16_000_000
LOG_BYTES_PER_TRIAL = 1_000_000
# what a study refused for space can do (and --ignore-free-space)
REMEDIES = ("free space there", "run fewer trials at once (--concurrent)")


def trial_epochs(
    trials: int, epochs: int, grace: int, asha: bool, reduction: float = ASHA_REDUCTION_FACTOR
) -> tuple[int, float]:
    """``(worst, expected)`` trial-epochs of ``trials`` trials of up to ``epochs`` epochs (a grid
    space: ``trials`` = its rows). Without ASHA, or with ``grace >= epochs``, both are
    ``trials * epochs``.

    ASHA (asynchronous successive halving) checks a trial at each rung, epoch
    ``ceil(grace * reduction**k)`` below ``epochs``, and stops it unless its metric is in the top
    ``1/reduction`` of those recorded at that rung so far. The approximation: of ``n`` trials
    reaching a rung, ``1 + (n - 1) / reduction`` go on (the first always does: Ray's cutoff of an
    empty rung is None; then about ``1/reduction``). Early stopping by ``fit``'s patience is
    ignored. Measured, studies spent more: 24 trials of 4 epochs took 45-60 trial-epochs against
    44 by this rule, of 8 epochs 69-84 against 54 (benchmarks.md:197-225; ties near chance and
    small rungs promote more than ``1/reduction``): read ``expected`` as a floor, ``worst`` as a
    ceiling.
    """
    worst = trials * epochs
    if not asha:
        return worst, float(worst)
    expected, reaching, reached = 0.0, float(trials), 0
    for rung in asha_rungs(grace, epochs, reduction):
        expected += reaching * (rung - reached)
        reaching, reached = min(reaching, 1 + (reaching - 1) / reduction), rung
    return worst, expected + reaching * (epochs - reached)


def asha_rungs(grace: int, epochs: int, reduction: float = ASHA_REDUCTION_FACTOR) -> list[int]:
    """The epochs at which ASHA may stop a trial, below ``epochs`` (grace 1, 8 epochs, reduction
    4: ``[1, 4]``); the grace period is capped at ``epochs``, as ``launch`` does."""
    rungs, milestone = [], float(min(grace, epochs))
    while math.ceil(milestone) < epochs:
        if math.ceil(milestone) not in rungs:
            rungs.append(math.ceil(milestone))
        milestone *= reduction
    return rungs


def checkpoint_bytes(config: TrainConfig, text_dim: int) -> int:
    """Bytes of a trial's Tune checkpoint for ``config`` at its last epoch: the ``checkpoint.pt``
    ``vcrnet.train.fit`` writes (the model's state, built on torch's ``meta`` device: no memory,
    no time; Adam's two moments and step per parameter; the zip records, a fixed part and the
    metrics history) and the ``best.pt`` beside it (``best_bytes``)."""
    state, params = _model_state(config, text_dim)
    weights = _bytes(state.values())
    adam = sum(2 * p.numel() * p.element_size() + 4 for p in params)  # exp_avg, exp_avg_sq, step
    checkpoint = _file_bytes(weights + adam, len(state) + 3 * len(params), config)
    return checkpoint + _file_bytes(weights, len(state), config)


def best_bytes(config: TrainConfig, text_dim: int) -> int:
    """Bytes of the ``best.pt`` ``fit`` writes for ``config``: the model's state, no optimizer."""
    state, _ = _model_state(config, text_dim)
    return _file_bytes(_bytes(state.values()), len(state), config)


def _model_state(config: TrainConfig, text_dim: int) -> tuple[dict, list]:
    import torch

    from vcrnet.model import JointModel

    with torch.device("meta"):
        model = JointModel(config.backbone(), text_dim)
    return model.state_dict(), list(model.parameters())


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _file_bytes(tensors: int, records: int, config: TrainConfig) -> int:
    return (
        tensors
        + records * CHECKPOINT_BYTES_PER_TENSOR
        + CHECKPOINT_FIXED_BYTES
        + config.epochs * CHECKPOINT_BYTES_PER_EPOCH
    )


def disk_needed(
    trials: int,
    concurrent: int,
    checkpoint: int,
    keep_checkpoints: bool,
    approaches: int = 1,
    best: int = 0,
) -> int:
    """Bytes a study needs on the home's disk at its peak. ``checkpoint``: a trial's Tune
    checkpoint (``checkpoint_bytes``), ``best``: its ``best.pt`` (``best_bytes``). Per running
    trial ``RUNNING_CHECKPOINT_FILES`` checkpoints and its working ``best.pt``; the ended trials
    held as the best of each of the space's ``approaches`` (a checkpoint each, and at the end
    their ``best.pt`` logged to MLflow), or with ``keep_checkpoints`` every trial's last
    checkpoint; and ``LOG_BYTES`` for logs and MLflow."""
    running, held = _running_and_held(trials, concurrent, approaches)
    files = _checkpoint_files(trials, running, keep_checkpoints, held)
    logged = min(trials, approaches)  # the best.pt each approach's best trial logs at the end
    return files * checkpoint + (running + logged) * best + LOG_BYTES + trials * LOG_BYTES_PER_TRIAL


def disk_why(
    trials: int, concurrent: int, checkpoint: int, keep_checkpoints: bool, approaches: int = 1
) -> str:
    """What ``disk_needed`` counts, for people: ``2 running trials x 3 checkpoints of 23.6 MB,
    the best ended trial of each of 5 approaches, and logs``."""
    running, held = _running_and_held(trials, concurrent, approaches)
    size = _size(checkpoint)
    if not keep_checkpoints:
        held_text = f"the best ended trial of each of {held} approach{'es' * (held != 1)}, "
        return (
            f"{running} running trial{_s(running)} x {RUNNING_CHECKPOINT_FILES} checkpoints "
            f"of {size}, {held_text * (held > 0)}and logs"
        )
    extra = RUNNING_CHECKPOINT_FILES - 1
    return (
        f"{trials} kept checkpoint{_s(trials)} (--keep-checkpoints) and {running} running "
        f"trial{_s(running)} x {extra} more, of {size} each, and logs"
    )


def _running_and_held(trials: int, concurrent: int, approaches: int) -> tuple[int, int]:
    """Trials running at once, and ended trials held meanwhile (one per approach at most)."""
    running = min(trials, concurrent)
    return running, min(trials - running, approaches)


def _checkpoint_files(trials: int, running: int, keep_checkpoints: bool, held: int) -> int:
    if keep_checkpoints:
        return trials + (RUNNING_CHECKPOINT_FILES - 1) * running
    return RUNNING_CHECKPOINT_FILES * running + held


def free_bytes(home: Path) -> int:
    """Free bytes on the disk ``home`` is (or will be) on: its nearest existing folder's."""
    return shutil.disk_usage(nearest_existing(home)).free


def free_space_check(
    home: Path, needed: int, why: str = "", remedies: tuple[str, ...] = REMEDIES
) -> None:
    """Refuse in one line (``InputError``) where ``home``'s disk has fewer than ``needed`` bytes
    free; ``why``: what the need is made of (``disk_why``)."""
    free = free_bytes(home)
    if free >= needed:
        return
    detail = f" ({why})" if why else ""
    advice = ", ".join((*remedies, "or pass --ignore-free-space"))
    raise InputError(
        f"{home}: {_size(free)} free, the study needs about {_size(needed)}{detail}; {advice}"
    )


def seconds_per_item(path: Path, key: ThroughputKey) -> tuple[float | None, str]:
    """Seconds per training item per epoch for ``key``, and where the figure comes from: the
    median of this home's measurements, else docs/benchmarks.md's, else ``(None, why)``."""
    measured = throughput.measured(path, key)
    if measured:
        count = len(measured)
        return statistics.median(measured), f"measured on this home, {count} epoch{_s(count)}"
    if key.device.startswith("cpu"):
        return _cpu_fallback(key)
    return _gpu_fallback(key)


def _cpu_fallback(key: ThroughputKey) -> tuple[float | None, str]:
    """``CPU_FALLBACK``, taken for a trial on ``n`` CPUs as ``2/n`` times the 2-CPU figure (the
    machine's throughput shared; not measured per CPU count, and no faster beyond 2)."""
    if key.preset not in CPU_FALLBACK:
        return None, f"no measurement for {key.preset} on {key.device}: estimate unknown"
    figure, which = CPU_FALLBACK[key.preset]
    _, _, count = key.device.partition(":")
    threads = int(count) if count.isdigit() and int(count) > 0 else CPU_THREADS_MEASURED
    scale = CPU_THREADS_MEASURED / min(threads, CPU_THREADS_MEASURED)
    at = f", x{scale:g} for {threads} CPU" if scale != 1 else ""
    return figure * scale, f"docs/benchmarks.md: {which}{at}"


def _gpu_fallback(key: ThroughputKey) -> tuple[float | None, str]:
    """``GPU_FALLBACK``; ``k`` trials sharing the GPU each take ``k / GPU_SHARING[k]`` times
    as long."""
    gpu, _, share = key.device.partition("/")
    k = int(share) if share.isdigit() and int(share) > 0 else 1
    sharing = _sharing(k)
    if (gpu, key.preset) not in GPU_FALLBACK or sharing is None:
        return None, f"no measurement for {key.preset} on {key.device}: estimate unknown"
    figure, which = GPU_FALLBACK[gpu, key.preset]
    shared = f", {k} trials a GPU: x{k / sharing:.2f} (lines 270-274)" if k > 1 else ""
    return figure * k / sharing, f"docs/benchmarks.md: {which}{shared}"


def _sharing(k: int) -> float | None:
    """Aggregate speed of ``k`` trials on one GPU against one (``GPU_SHARING``, interpolated)."""
    if k in GPU_SHARING:
        return GPU_SHARING[k]
    below = max((n for n in GPU_SHARING if n < k), default=None)
    above = min((n for n in GPU_SHARING if n > k), default=None)
    if below is None or above is None:
        return None
    low, high = GPU_SHARING[below], GPU_SHARING[above]
    return low + (high - low) * (k - below) / (above - below)


@dataclass(frozen=True)
class Plan:
    """A study's cost, as ``estimate`` makes it; ``lines()`` shows it."""

    trials: int
    epochs: int
    rungs: tuple[int, ...]  # ASHA's; () without ASHA
    reduction: float
    worst_epochs: int
    expected_epochs: float
    train_items: int
    item_seconds: float | None
    seconds_source: str
    parallel: int
    gpus_per_trial: float
    checkpoint: int
    keep_checkpoints: bool
    disk_needed: int
    disk_free: int
    approaches: int = 1

    @property
    def epoch_seconds(self) -> float | None:
        return None if self.item_seconds is None else self.train_items * self.item_seconds

    def wall_seconds(self, trial_epochs: float | None = None) -> float | None:
        """Wall time for ``trial_epochs`` (default: the expected): the epochs and each trial's
        start shared among the parallel trials, and Ray's start."""
        if self.epoch_seconds is None or self.parallel < 1:
            return None
        spent = (
            self.expected_epochs if trial_epochs is None else trial_epochs
        ) * self.epoch_seconds + self.trials * TRIAL_OVERHEAD_SECONDS
        return RAY_START_SECONDS + spent / self.parallel

    def gpu_hours(self, trial_epochs: float | None = None) -> float | None:
        if self.epoch_seconds is None or self.gpus_per_trial <= 0:
            return None
        epochs = self.expected_epochs if trial_epochs is None else trial_epochs
        return epochs * self.epoch_seconds * self.gpus_per_trial / 3600

    @property
    def disk_ok(self) -> bool:
        return self.disk_free >= self.disk_needed

    def disk_why(self) -> str:
        return disk_why(
            self.trials,
            self.parallel or 1,
            self.checkpoint,
            self.keep_checkpoints,
            self.approaches,
        )

    def check_free_space(self, home: Path) -> None:
        """``free_space_check`` with this plan's need, what it is made of and what would help."""
        extra = ("drop --keep-checkpoints",) if self.keep_checkpoints else ()
        free_space_check(home, self.disk_needed, self.disk_why(), (*REMEDIES, *extra))

    def lines(self) -> list[str]:
        return [
            self._trials_line(),
            self._epochs_line(),
            self._epoch_time_line(),
            self._wall_line(),
            self._gpu_line(),
            self._disk_line(),
        ]

    def _trials_line(self) -> str:
        running = (
            f"{self.parallel} at a time"
            if self.parallel
            else "none at a time: the resources fit no trial"
        )
        return (
            f"plan: {self.trials} trial{_s(self.trials)} of up to {self.epochs} "
            f"epoch{_s(self.epochs)}, {running}"
        )

    def _epochs_line(self) -> str:
        if not self.rungs:
            return f"trial-epochs: {self.worst_epochs} (no early stopping by ASHA)"
        rungs = ", ".join(map(str, self.rungs))
        return (
            f"trial-epochs: {self.worst_epochs} at most, ~{self.expected_epochs:.0f} expected "
            f"with ASHA (stops at epoch{_s(len(self.rungs))} {rungs}, about "
            f"{1 - 1 / self.reduction:.0%} of the trials at each)"
        )

    def _epoch_time_line(self) -> str:
        if self.item_seconds is None:
            return f"one epoch: unknown ({self.seconds_source})"
        return (
            f"one epoch: ~{_duration(self.epoch_seconds)} ({self.train_items:,} training "
            f"items x {self.item_seconds:.3g} s; {self.seconds_source})"
        )

    def _wall_line(self) -> str:
        expected, worst = self.wall_seconds(), self.wall_seconds(self.worst_epochs)
        if expected is None:
            return "wall time: unknown"
        most = f", {_duration(worst)} at most" if self.rungs else ""
        return f"wall time: ~{_duration(expected)}{most} (Ray's and the trials' start-up included)"

    def _gpu_line(self) -> str:
        if self.gpus_per_trial <= 0:
            return "GPU-hours: none (CPU trials)"
        hours = self.gpu_hours()
        if hours is None:
            return "GPU-hours: unknown"
        most = f", {self.gpu_hours(self.worst_epochs):.2f} at most" if self.rungs else ""
        return f"GPU-hours: ~{hours:.2f}{most} ({self.gpus_per_trial:g} GPU a trial)"

    def _disk_line(self) -> str:
        verdict = "OK" if self.disk_ok else "NOT ENOUGH"
        return (
            f"disk: ~{_size(self.disk_needed)} at the peak ({self.disk_why()}), "
            f"{_size(self.disk_free)} free: {verdict}"
        )


def estimate(
    *,
    trials: int,
    epochs: int,
    grace: int,
    asha: bool,
    concurrent: int,
    cpus: float,
    cpus_per_trial: float,
    train_items: int,
    seconds: tuple[float | None, str],
    checkpoint: int,
    disk_free: int,
    gpus: float = 0.0,
    gpus_per_trial: float = 0.0,
    keep_checkpoints: bool = False,
    reduction: float = ASHA_REDUCTION_FACTOR,
    approaches: int = 1,
    best: int = 0,
) -> Plan:
    """The plan of a study: ``seconds`` from ``seconds_per_item``; ``cpus`` and ``gpus`` what
    the cluster (or this machine) has; ``train_items`` a trial's training items (after the dev
    split); ``checkpoint`` from ``checkpoint_bytes``, ``best`` from ``best_bytes``; ``disk_free``
    from ``free_bytes``; ``approaches``: what ``best`` gives a row each (``results.approaches``)."""
    worst, expected = trial_epochs(trials, epochs, grace, asha, reduction)
    parallel = parallel_trials(trials, concurrent, cpus, cpus_per_trial, gpus, gpus_per_trial)
    return Plan(
        trials=trials,
        epochs=epochs,
        rungs=tuple(asha_rungs(grace, epochs, reduction)) if asha else (),
        reduction=reduction,
        worst_epochs=worst,
        expected_epochs=expected,
        train_items=train_items,
        item_seconds=seconds[0],
        seconds_source=seconds[1],
        parallel=parallel,
        gpus_per_trial=gpus_per_trial,
        checkpoint=checkpoint,
        keep_checkpoints=keep_checkpoints,
        disk_needed=disk_needed(
            trials, max(parallel, 1), checkpoint, keep_checkpoints, approaches, best
        ),
        disk_free=disk_free,
        approaches=approaches,
    )


def parallel_trials(
    trials: int,
    concurrent: int,
    cpus: float,
    cpus_per_trial: float,
    gpus: float = 0.0,
    gpus_per_trial: float = 0.0,
) -> int:
    """Trials that can run at once: ``concurrent``, as far as the trials and resources go."""
    fits = [trials, concurrent, math.floor(cpus / cpus_per_trial + 1e-9)]
    if gpus_per_trial > 0:
        fits.append(math.floor(gpus / gpus_per_trial + 1e-9))
    return max(0, min(fits))


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _s(n: float) -> str:
    return "" if n == 1 else "s"
