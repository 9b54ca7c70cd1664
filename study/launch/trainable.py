"""The Ray Tune function trainable (worker side): a trial is one ``vcrnet.train.fit``.

It turns the trial's Tune config into a TrainConfig (``TrialConfigs``, which holds the parsed
search space: a worker reads no space file), reads the shared
feature cache (never recomputes it; from a copy on the node's local disk when asked,
``vcrnet.features.stage``), resumes from Tune's checkpoint when there is one, and reports every
epoch with a checkpoint (and the best epoch's weights so far, ``best.pt``), with the node's and
the trial's system metrics (``SystemSampler``).
Everything it is handed is an absolute path: trials change directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import ray
import torch
from ray import tune

from study.launch import retention
from study.launch.throughput import device_kind as throughput_device
from study.search import TrialConfigs
from study.tracking import TEST_SCORES, VAL_PREDICTIONS
from vcrnet.atomic import write_text
from vcrnet.features import CachedVCRDataset
from vcrnet.features.extract import SplitFeatures
from vcrnet.features.stage import LOCAL_CACHE_VARIABLE, stage
from vcrnet.train import BEST, CHECKPOINT, METRICS, fit

# a finals checkpoint's folder of leaderboard CSVs, and the test readings' file in it (schema's)
PREDICTIONS = Path(VAL_PREDICTIONS).parent.name

MEGABYTE = 1e6  # MLflow's system metrics count megabytes of 10^6 bytes


def train_trial(
    config: dict,
    *,
    configs: TrialConfigs,
    features: dict[str, tuple[str, str]],
    extra: dict,
    cpus: float,
    local_cache: str | None = None,
    predictions: bool = False,
    test_labels: dict | None = None,
) -> None:
    """``local_cache``: a folder on the node's local disk to read the cache from (copied there
    by the node's first trial); None: ``$VCR_STUDY_LOCAL_CACHE`` on the node, if set.
    ``predictions`` (the finals): each checkpoint also holds the best epoch's predictions of
    val and, where ``features`` has it, test, as leaderboard CSVs (``PREDICTIONS``), and with
    ``test_labels`` (annot_id -> (answer, rationale), kept apart from the test split) the test
    readings of every decoding (``TEST_SCORES``)."""
    torch.set_num_threads(max(1, int(cpus)))
    train_config = configs.config(config)
    node_id = ray.get_runtime_context().get_node_id()
    local_cache = local_cache or os.environ.get(LOCAL_CACHE_VARIABLE) or None
    entries = {}
    for split, paths in features.items():
        for path in paths:
            if not Path(path).exists():
                raise FileNotFoundError(
                    f"feature cache ({split}) {path}: not visible on Ray node "
                    f"{node_id[:12]}; it must be on storage every node "
                    "mounts at the same path"
                )
        entries[split] = [
            stage(Path(p), Path(local_cache)) if local_cache else Path(p) for p in paths
        ]
    splits = {
        split: CachedVCRDataset(SplitFeatures(text, objects, ()))
        for split, (text, objects) in entries.items()
    }
    train_set, val_set = splits["train"], splits["val"]
    predicted = {k: v for k, v in splits.items() if k in ("val", "test")} if predictions else {}
    working = _working_folder()
    out, outbox = working / "run", working / retention.OUTBOX
    out.mkdir(parents=True, exist_ok=True)
    alive = retention.hold_alive(working)  # noqa: F841 (held until the trial's process ends)
    retention.clear_dead_trials(working)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            for name in (CHECKPOINT, METRICS):
                shutil.copy2(Path(folder) / name, out / name)
            if (Path(folder) / BEST).is_file():  # not in a checkpoint from before it
                shutil.copy2(Path(folder) / BEST, out / BEST)
            if (Path(folder) / PREDICTIONS).is_dir():
                shutil.copytree(Path(folder) / PREDICTIONS, out / PREDICTIONS, dirs_exist_ok=True)
    made_for = None  # the best weights (by inode: fit renames a new file in) predicted with

    def report(metrics: dict, run_dir: Path) -> None:
        """Hand the epoch's checkpoint to Tune (moved: the trial keeps no copy of its own), with
        the trial's best weights so far (the study logs its best trials' to MLflow at its end)."""
        outbox.mkdir(exist_ok=True)
        os.replace(run_dir / CHECKPOINT, outbox / CHECKPOINT)
        shutil.copy2(run_dir / METRICS, outbox / METRICS)
        nonlocal made_for
        if (run_dir / BEST).is_file():  # none yet: resumed from a checkpoint from before BEST
            # linked, not copied: fit replaces BEST by a rename, so the link keeps this epoch's
            (outbox / BEST).unlink(missing_ok=True)
            os.link(run_dir / BEST, outbox / BEST)
            if predicted and (run_dir / BEST).stat().st_ino != made_for:
                write_predictions(
                    run_dir / BEST, predicted, run_dir / PREDICTIONS, device, test_labels
                )
                made_for = (run_dir / BEST).stat().st_ino
            if predicted:
                shutil.copytree(run_dir / PREDICTIONS, outbox / PREDICTIONS, dirs_exist_ok=True)
        tune.report(
            {**metrics, **system.sample(), "node_id": node_id, "device_kind": device_kind},
            checkpoint=tune.Checkpoint.from_directory(str(outbox)),
        )
        shutil.rmtree(outbox, ignore_errors=True)  # Tune has its copy now

    gpus = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
    device = "cuda" if torch.cuda.is_available() and gpus > 0 else "cpu"
    device_kind = throughput_device(device, cpus, gpus)  # what the throughput store keys on
    system = SystemSampler(device)
    fit(
        train_config,
        train_set,
        val_set,
        out,
        resume=checkpoint is not None,
        on_epoch=report,
        extra=extra,
        device=device,
    )


def write_predictions(
    weights: Path, datasets: dict, folder: Path, device: str, test_labels: dict | None = None
) -> None:
    """The predictions of the model at ``weights`` for each split of ``datasets`` as its
    leaderboard CSV ``folder/<split>.csv``; where ``test_labels`` has every test question, the
    test readings of every decoding as ``folder/test_scores.json`` (``test_<reading>``)."""
    from vcrnet.couplings import COUPLINGS
    from vcrnet.leaderboard import write_csv
    from vcrnet.train import load_model, predict, readings

    model, config, _ = load_model(weights)
    model.to(device)
    for split, dataset in datasets.items():
        p = predict(model, dataset)
        write_csv(folder / f"{split}.csv", dataset.annot_ids, p.answer_probs, p.rationale_probs)
        if split == "test" and test_labels and all(i in test_labels for i in dataset.annot_ids):
            pairs = torch.tensor([test_labels[i] for i in dataset.annot_ids])
            scores = readings(p, COUPLINGS[config.method](config.coupling()), tuple(pairs.T))
            write_text(
                folder / Path(TEST_SCORES).name,
                json.dumps({f"test_{k}": v for k, v in scores.items()}),
            )


class SystemSampler:
    """Each epoch's system metrics, under the names of MLflow's own (``system/...``: its UI's
    System metrics tab shows them). MLflow samples those in the process of an active run; here
    only the driver writes MLflow, so the trial samples and reports them with its metrics:

    - its node's, as MLflow's ``CPUMonitor`` and ``GPUMonitor`` (``system/cpu_utilization_
      percentage`` averaged since the last sample, ``system/system_memory_usage_megabytes`` and
      ``_percentage``; for each GPU the trial holds, by its index on the node,
      ``system/gpu_<i>_memory_usage_megabytes`` and ``_percentage``, and with ``nvidia-ml-py``
      installed ``system/gpu_<i>_utilization_percentage``): trials packed on one node or one GPU
      show the same node's load, the run's ``node_id`` tag says which;
    - its own: ``system/trial_cpu_utilization_percentage`` (100 = one core),
      ``system/trial_memory_rss_megabytes``, and on a GPU the epoch's peak
      ``system/trial_gpu_memory_peak_megabytes`` (what its share of a GPU must hold).
    """

    def __init__(self, device: str = "cpu"):
        import psutil  # Ray's copy (ray/thirdparty_files, on the path once ray is imported)

        self.psutil = psutil
        self.process = psutil.Process()
        psutil.cpu_percent()  # the first call starts the averaging window
        self.process.cpu_percent()
        self.gpus: dict[int, int] = {}  # torch's index -> the node's (NVML's) index
        if device == "cuda":
            ids = [int(i) for i in ray.get_gpu_ids()] if ray.is_initialized() else []
            self.gpus = {i: ids[i] if i < len(ids) else i for i in range(torch.cuda.device_count())}
        self.nvml = _nvml() if self.gpus else None

    def sample(self) -> dict[str, float]:
        memory = self.psutil.virtual_memory()
        metrics = {
            "system/cpu_utilization_percentage": self.psutil.cpu_percent(),
            "system/system_memory_usage_megabytes": memory.used / MEGABYTE,
            "system/system_memory_usage_percentage": memory.used / memory.total * 100,
            "system/trial_cpu_utilization_percentage": self.process.cpu_percent(),
            "system/trial_memory_rss_megabytes": self.process.memory_info().rss / MEGABYTE,
        }
        for index, node_index in self.gpus.items():
            free, total = torch.cuda.mem_get_info(index)  # the whole GPU's, every process's
            gpu = f"system/gpu_{node_index}"
            metrics[f"{gpu}_memory_usage_megabytes"] = (total - free) / MEGABYTE
            metrics[f"{gpu}_memory_usage_percentage"] = (total - free) / total * 100
            if self.nvml is not None:
                with contextlib.suppress(self.nvml.NVMLError):
                    handle = self.nvml.nvmlDeviceGetHandleByIndex(node_index)
                    metrics[f"{gpu}_utilization_percentage"] = float(
                        self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                    )
        if self.gpus:
            metrics["system/trial_gpu_memory_peak_megabytes"] = (
                sum(torch.cuda.max_memory_allocated(i) for i in self.gpus) / MEGABYTE
            )
            for index in self.gpus:
                torch.cuda.reset_peak_memory_stats(index)
        return {key: round(value, 1) for key, value in metrics.items()}


def _nvml():
    """NVML (``nvidia-ml-py``, which MLflow's GPU monitor uses too), or None without it."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver library
        return None
    return pynvml


def _working_folder() -> Path:
    """The trial's own working folder on its node: the one Tune starts it in, not its log folder
    (``get_trial_dir``), which the driver copies to ``ray_results`` whole, checkpoints and all;
    a folder of its own if ``RAY_CHDIR_TO_TRIAL_DIR=0`` starts every trial in one place."""
    here = Path.cwd()
    if here.parent.name == "working_dirs":
        return here
    folder = here / "vcr-study-trials" / tune.get_context().get_trial_id()
    folder.mkdir(parents=True, exist_ok=True)
    return folder
