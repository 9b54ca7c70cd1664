"""A study's cost before launching (study/launch/cost.py): trial-epochs under ASHA, checkpoint and
disk sizes, the free-space refusal, the throughput store (throughput.py) and the printed plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from study.launch import cost, throughput
from study.launch.throughput import ThroughputKey
from tests.helpers import ROOT
from vcrnet.config import TrainConfig
from vcrnet.errors import InputError
from vcrnet.features import CachedVCRDataset
from vcrnet.train import BEST, CHECKPOINT, fit

MB = 1_000_000
CPU_KEY = ThroughputKey("abc123", "cpu:2", "small", 16)


@pytest.mark.parametrize(
    "trials, epochs, grace, asha, reduction, expected",
    [
        (8, 4, 1, False, 4, 32.0),  # no ASHA: every trial runs every epoch
        # grace 1, max_t 4, reduction 4: one rung, at epoch 1 (the next, 4, is max_t). All 8
        # trials run epoch 1 (8); of the 8, 1 + 7/4 = 2.75 go on and run epochs 2-4
        # (2.75 x 3 = 8.25): 16.25.
        (8, 4, 1, True, 4, 16.25),
        (8, 4, 4, True, 4, 32.0),  # grace == max_t: no rung below max_t, nothing is stopped
        (8, 4, 9, True, 4, 32.0),  # a grace beyond max_t is capped at it, as launch does
        # rungs at 1 and 4 of 8: 24 x 1 + 6.75 x 3 + (1 + 5.75 / 4) x 4 = 24 + 20.25 + 9.75 = 54
        (24, 8, 1, True, 4, 54.0),
        # reduction 2, rungs at 1 and 2 of 3: 4 x 1 + (1 + 3/2) x 1 + (1 + 1.5/2) x 1 = 8.25
        (4, 3, 1, True, 2, 8.25),
        (1, 10, 1, True, 4, 10.0),  # one trial: the first to reach a rung always goes on
    ],
)
def test_trial_epochs(trials, epochs, grace, asha, reduction, expected):
    worst, got = cost.trial_epochs(trials, epochs, grace, asha, reduction)
    assert worst == trials * epochs
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    "grace, epochs, reduction, rungs",
    [
        (1, 4, 4, [1]),
        (1, 8, 4, [1, 4]),
        (1, 100, 3, [1, 3, 9, 27, 81]),
        (2, 100, 2.5, [2, 5, 13, 32, 79]),  # Ray stops at the first iteration >= 12.5: 13
        (4, 4, 4, []),
    ],
)
def test_asha_rungs_match_rays_milestones(grace, epochs, reduction, rungs):
    assert cost.asha_rungs(grace, epochs, reduction) == rungs


def test_the_default_reduction_factor_is_rays():
    from ray.tune.schedulers import ASHAScheduler

    assert ASHAScheduler(max_t=4)._reduction_factor == cost.ASHA_REDUCTION_FACTOR


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_checkpoint_bytes_match_a_file_fit_writes(synthetic_features, tmp_path, preset):
    data = CachedVCRDataset(synthetic_features)
    config = TrainConfig(preset=preset, method="softmax", epochs=2, batch_size=8)
    fit(config, data, data, tmp_path / "run")
    best = (tmp_path / "run" / BEST).stat().st_size
    real = (tmp_path / "run" / CHECKPOINT).stat().st_size + best  # a trial's Tune checkpoint
    assert cost.checkpoint_bytes(config, data.text_dim) == pytest.approx(real, rel=0.10)
    assert cost.best_bytes(config, data.text_dim) == pytest.approx(best, rel=0.10)


def test_disk_needed_counts_running_trials_or_every_kept_checkpoint():
    logs = cost.LOG_BYTES + 8 * cost.LOG_BYTES_PER_TRIAL
    # without keeping: 2 running trials x 3 checkpoints; of the ended trials, only the best
    # of each approach (one here) keeps its checkpoint until the study ends
    assert cost.disk_needed(8, 2, 10 * MB, keep_checkpoints=False) == 7 * 10 * MB + logs
    # 5 approaches hold 5; each held and running trial has a best.pt beside (logged at the end)
    assert (
        cost.disk_needed(8, 2, 10 * MB, False, approaches=5, best=3 * MB)
        == 11 * 10 * MB + 7 * 3 * MB + logs
    )
    # kept: 8 last checkpoints, and the 2 running trials' 2 transient files each
    assert cost.disk_needed(8, 2, 10 * MB, keep_checkpoints=True) == 12 * 10 * MB + logs
    # more concurrency than trials: only the trials can run
    assert (
        cost.disk_needed(1, 4, 10 * MB, False)
        == 3 * 10 * MB + cost.LOG_BYTES + cost.LOG_BYTES_PER_TRIAL
    )


def test_free_space_check_refuses_in_one_line_naming_the_flag(tmp_path):
    home = tmp_path / "not-yet" / "home"  # the nearest existing folder's disk is read
    why = cost.disk_why(8, 2, 24 * MB, keep_checkpoints=False, approaches=5)
    with pytest.raises(InputError) as err:
        cost.free_space_check(home, 10**18, why=why)
    message = str(err.value)
    assert "\n" not in message
    assert (
        message.startswith(f"{home}: ")
        and " GB free, the study needs about 1000000000.0 GB" in message
    )
    assert (
        "(2 running trials x 3 checkpoints of 24.0 MB, the best ended trial of each of 5 "
        "approaches, and logs)"
    ) in message
    assert message.endswith("or pass --ignore-free-space")


def test_free_space_check_passes_where_there_is_room(tmp_path):
    cost.free_space_check(tmp_path / "not-yet", 1)
    assert cost.free_bytes(tmp_path / "not-yet" / "home") > 0


def test_a_plan_with_kept_checkpoints_suggests_dropping_them(tmp_path):
    p = _default_plan(keep_checkpoints=True, checkpoint=10**18)
    with pytest.raises(
        InputError,
        match=r"--keep-checkpoints\).*drop --keep-checkpoints, or "
        r"pass --ignore-free-space$",
    ):
        p.check_free_space(tmp_path)


def test_throughput_round_trip_is_the_median_of_the_last_epochs(tmp_path):
    path = tmp_path / "throughput.json"
    for seconds in (30.0, 60.0, 45.0):
        throughput.record_epoch(path, CPU_KEY, seconds, 1500)
    figure, source = cost.seconds_per_item(path, CPU_KEY)
    assert figure == pytest.approx(45.0 / 1500)
    assert source == "measured on this home, 3 epochs"
    other = CPU_KEY._replace(batch_size=32)  # another key: not measured yet
    assert cost.seconds_per_item(path, other)[1].startswith("docs/benchmarks.md")
    for _ in range(throughput.KEEP_LAST + 5):
        throughput.record_epoch(path, CPU_KEY, 15.0, 1500)
    stored = json.loads(path.read_text())["seconds_per_item"][CPU_KEY.id()]
    assert len(stored) == throughput.KEEP_LAST and cost.seconds_per_item(path, CPU_KEY)[0] == 0.01


def test_record_epoch_ignores_epochs_without_a_time(tmp_path):
    path = tmp_path / "throughput.json"
    throughput.record_epoch(path, CPU_KEY, float("nan"), 100)
    throughput.record_epoch(path, CPU_KEY, 10.0, 0)
    assert not path.exists()


def test_train_items_from_fits_metrics():
    assert throughput.train_items({"train_items_per_s": 50.0, "train_seconds": 27.0}) == 1350


@pytest.mark.parametrize(
    "device, preset, figure, cited",
    [
        ("cpu:2", "small", 63 / 2700, "63 s for 2 epochs"),
        ("cpu:1", "small", 2 * 63 / 2700, "x2 for 1 CPU"),
        ("cpu", "tiny", 63 / 2700, "upper bound"),
        ("cpu:2", "r2c", 63 / 2700 * 21_677_314 / 1_953_602, "parameter ratio"),
        ("cuda:NVIDIA H200", "r2c", cost.EPOCH_OVER_TRAINING / 1009, "1,009 items/s"),
        # 4 trials on one GPU do 2.68x one's items together (MPS): each takes 4/2.68 as long
        ("cuda:NVIDIA H200/4", "r2c", cost.EPOCH_OVER_TRAINING / 1009 * 4 / 2.68, "x1.49"),
        (
            "cuda:NVIDIA H200/3",
            "r2c",
            cost.EPOCH_OVER_TRAINING / 1009 * 3 / 2.295,
            "3 trials a GPU",
        ),
    ],
)
def test_fallback_figures_cite_docs_benchmarks(tmp_path, device, preset, figure, cited):
    key = ThroughputKey("fp", device, preset, 16)
    got, source = cost.seconds_per_item(tmp_path / "none.json", key)
    assert got == pytest.approx(figure)
    assert source.startswith("docs/benchmarks.md: ") and cited in source


def test_the_cited_figures_are_in_docs_benchmarks():
    """The figures cost.py's constants are made of (their lines cited there)."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for figure in (
        "| now | 46.2, 50.8 | 82.6, 68.9 | 63 + 44 s |",
        "1,350 training questions",
        "the model alone did 1,009 items/s",
        "| 935.6 |",
        "| 878.0 |",
        "6 trials run one at a time",
        "| 2 | 3,070 | 1.50 | 3,757 | 1.91 |",
        "| 4 | 3,467 | **1.69** | 5,257 | **2.68** |",
    ):
        assert figure in " ".join(text.split()), figure


def test_an_unmeasured_gpu_has_no_estimate(tmp_path):
    for device, preset in [("cuda:NVIDIA H200/8", "r2c"), ("cuda:NVIDIA H200", "small")]:
        figure, _ = cost.seconds_per_item(
            tmp_path / "none.json", ThroughputKey("fp", device, preset, 96)
        )
        assert figure is None
    key = ThroughputKey("fp", "cuda:NVIDIA A10G", "r2c", 96)
    figure, source = cost.seconds_per_item(tmp_path / "none.json", key)
    assert figure is None and source.endswith("estimate unknown")
    lines = _default_plan(seconds=(figure, source), gpus=1, gpus_per_trial=1).lines()
    assert (
        "one epoch: unknown (no measurement for r2c on cuda:NVIDIA A10G: estimate unknown)" in lines
    )
    assert "wall time: unknown" in lines and "GPU-hours: unknown" in lines


@pytest.mark.parametrize(
    "content", ["{not json", "[]", '{"seconds_per_item": {"k": ["x"]}}', '{"version": 1}']
)
def test_a_corrupt_store_is_read_as_empty_with_a_warning(tmp_path, content):
    path = tmp_path / "throughput.json"
    path.write_text(content)
    with pytest.warns(UserWarning, match="throughput.json: unreadable"):
        figure, source = cost.seconds_per_item(path, CPU_KEY)
    assert source.startswith("docs/benchmarks.md")
    with pytest.warns(UserWarning):
        throughput.record_epoch(path, CPU_KEY, 30.0, 1000)  # replaces the bad file
    assert cost.seconds_per_item(path, CPU_KEY) == (0.03, "measured on this home, 1 epoch")


def test_parallel_trials_are_bounded_by_resources():
    assert cost.parallel_trials(8, 2, cpus=2, cpus_per_trial=1) == 2
    assert cost.parallel_trials(8, 4, cpus=2, cpus_per_trial=1) == 2
    assert cost.parallel_trials(1, 4, cpus=16, cpus_per_trial=1) == 1
    assert cost.parallel_trials(8, 8, cpus=16, cpus_per_trial=1, gpus=1, gpus_per_trial=0.25) == 4
    assert cost.parallel_trials(8, 8, cpus=16, cpus_per_trial=1, gpus=1, gpus_per_trial=1 / 3) == 3
    assert cost.parallel_trials(8, 2, cpus=1, cpus_per_trial=2) == 0


def _default_plan(**changes) -> cost.Plan:
    """The default study (search_spaces/default.yaml) on the 2-core machine, 1 CPU a trial."""
    args = dict(
        trials=8,
        epochs=4,
        grace=1,
        asha=True,
        concurrent=2,
        cpus=2,
        cpus_per_trial=1,
        train_items=1350,
        checkpoint=24 * MB,
        best=8 * MB,
        approaches=5,  # the default space's methods
        disk_free=100 * 10**9,
        seconds=cost.seconds_per_item(
            Path("/nonexistent/throughput.json"), ThroughputKey("fp", "cpu:1", "small", 16)
        ),
    )
    return cost.estimate(**{**args, **changes})


def test_estimate_lines_show_the_plan():
    p = _default_plan()
    epoch = 1350 * 2 * 63 / 2700  # 63 s: the figure at 2 CPUs, twice for 1 CPU a trial
    assert p.epoch_seconds == pytest.approx(epoch)
    assert p.wall_seconds() == pytest.approx(
        cost.RAY_START_SECONDS + (16.25 * epoch + 8 * cost.TRIAL_OVERHEAD_SECONDS) / 2
    )
    assert p.gpu_hours() is None
    lines = p.lines()
    assert 6 <= len(lines) <= 8
    assert lines[0] == "plan: 8 trials of up to 4 epochs, 2 at a time"
    assert lines[1] == (
        "trial-epochs: 32 at most, ~16 expected with ASHA (stops at epoch 1, "
        "about 75% of the trials at each)"
    )
    assert lines[2] == (
        "one epoch: ~63 s (1,350 training items x 0.0467 s; docs/benchmarks.md: "
        "small, batch 16, 2 CPUs: 63 s for 2 epochs of 1,350 items (line 355), "
        "x2 for 1 CPU)"
    )
    assert lines[3] == (
        "wall time: ~9 min, 17 min at most (Ray's and the trials' start-up included)"
    )
    assert lines[4] == "GPU-hours: none (CPU trials)"
    # 2 x 3 running checkpoints, 5 held, and 2 working + 5 logged best.pt
    need = 11 * 24 * MB + 7 * 8 * MB + cost.LOG_BYTES + 8 * cost.LOG_BYTES_PER_TRIAL
    assert lines[5] == (
        f"disk: ~{need / MB:.1f} MB at the peak (2 running trials x 3 checkpoints of 24.0 MB, "
        "the best ended trial of each of 5 approaches, and logs), 100.0 GB free: OK"
    )
    assert _default_plan(disk_free=MB).lines()[5].endswith("1.0 MB free: NOT ENOUGH")


def test_estimate_on_gpus_counts_gpu_hours():
    p = _default_plan(
        asha=False,
        gpus=1,
        gpus_per_trial=0.5,
        concurrent=4,
        seconds=(0.001, "docs/benchmarks.md: test"),
    )
    assert p.parallel == 2
    assert p.gpu_hours() == pytest.approx(32 * 1.35 * 0.5 / 3600)
    assert p.lines()[1] == "trial-epochs: 32 (no early stopping by ASHA)"
    assert p.lines()[4] == "GPU-hours: ~0.01 (0.5 GPU a trial)"


def test_the_default_studys_measured_wall_time_is_within_2x_of_its_estimate():
    """The default study as ``make run`` runs it, measured by benchmarks/study_footprint.py
    (docs/measurements/study_footprint_cpu.json, docs/benchmarks.md): its wall time within a
    factor 2 of the estimate a fresh home makes (docs/benchmarks.md's figures), below the worst
    case; and within 2x of the estimate from the speed that study measured."""
    measured = json.loads((ROOT / "docs" / "measurements" / "study_footprint_cpu.json").read_text())
    wall, p = measured["wall_seconds"], _default_plan()
    assert p.wall_seconds() / 2 <= wall <= 2 * p.wall_seconds()
    assert wall < p.wall_seconds(p.worst_epochs)
    item_seconds = measured["estimate_from_this_home"]["epoch_seconds"] / 1350
    again = _default_plan(seconds=(item_seconds, "measured on this home"))
    assert again.wall_seconds() / 2 <= wall <= 2 * again.wall_seconds()


def test_the_module_imports_without_ray_or_torch():
    code = "import sys, study.launch.cost; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_driver_without_a_gpu_finds_the_gpu_its_trials_measured(tmp_path):
    path = tmp_path / "throughput.json"
    assert throughput.measured_gpu(path, 0.25) is None
    for device in ("cpu:1", "cuda:NVIDIA H200/4", "cuda:NVIDIA H200"):
        throughput.record_epoch(path, ThroughputKey("fp", device, "r2c", 96), 60.0, 1000)
    assert throughput.measured_gpu(path, 0.25) == "cuda:NVIDIA H200/4"
    assert throughput.measured_gpu(path, 1.0) == "cuda:NVIDIA H200"
    assert throughput.measured_gpu(path, 0.5) is None
