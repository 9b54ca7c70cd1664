"""The Ray Tune function trainable: a thin wrapper around ``vcrnet.train.fit``.

It turns the trial's flat config into a TrainConfig (through the search space), reads the shared
feature cache (never recomputes it; from a copy on the node's local disk when asked,
``vcrnet.features.stage``), resumes from Tune's checkpoint when there is one, and reports every
epoch with a checkpoint. Everything it is handed is an absolute path: trials change directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import ray
import torch
from ray import tune

from study import disk, plan
from study.spaces import load_space, trial_values
from vcrnet.config import TrainConfig
from vcrnet.features import CachedVCRDataset
from vcrnet.features.extract import SplitFeatures
from vcrnet.features.stage import LOCAL_CACHE_VARIABLE, stage
from vcrnet.train import CHECKPOINT, METRICS, fit


def resolve_config(space_path: str, config: dict, overrides: dict) -> TrainConfig:
    """The trial's TrainConfig: the space's values, then the launch's ``--set`` overrides."""
    space = load_space(space_path)
    return space.config({**trial_values(config), **overrides})


def train_trial(config: dict, *, space_path: str, features: dict[str, tuple[str, str]],
                extra: dict, cpus: float, overrides: dict, local_cache: str | None = None) -> None:
    """``local_cache``: a folder on the node's local disk to read the cache from (copied there
    by the node's first trial); None: ``$VCR_STUDY_LOCAL_CACHE`` on the node, if set."""
    torch.set_num_threads(max(1, int(cpus)))
    train_config = resolve_config(space_path, config, overrides)
    node_id = ray.get_runtime_context().get_node_id()
    local_cache = local_cache or os.environ.get(LOCAL_CACHE_VARIABLE) or None
    entries = {}
    for split, paths in features.items():
        for path in paths:
            if not Path(path).exists():
                raise FileNotFoundError(f"feature cache ({split}) {path}: not visible on Ray node "
                                        f"{node_id[:12]}; it must be on storage every node "
                                        "mounts at the same path")
        entries[split] = [stage(Path(p), Path(local_cache)) if local_cache else Path(p)
                          for p in paths]
    train_set, val_set = (CachedVCRDataset(SplitFeatures(text, objects, ()))
                          for text, objects in (entries["train"], entries["val"]))
    working = _working_folder()
    out, outbox = working / "run", working / disk.OUTBOX
    out.mkdir(parents=True, exist_ok=True)
    alive = disk.hold_alive(working)  # noqa: F841 (held until the trial's process ends)
    disk.clear_dead_trials(working)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            for name in (CHECKPOINT, METRICS):
                shutil.copy2(Path(folder) / name, out / name)

    def report(metrics: dict, run_dir: Path) -> None:
        """Hand the epoch's checkpoint to Tune (moved: the trial keeps no copy of its own)."""
        outbox.mkdir(exist_ok=True)
        os.replace(run_dir / CHECKPOINT, outbox / CHECKPOINT)
        shutil.copy2(run_dir / METRICS, outbox / METRICS)
        tune.report({**metrics, "node_id": node_id, "device_kind": device_kind},
                    checkpoint=tune.Checkpoint.from_directory(str(outbox)))
        shutil.rmtree(outbox, ignore_errors=True)  # Tune has its copy now

    gpus = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
    device = "cuda" if torch.cuda.is_available() and gpus > 0 else "cpu"
    device_kind = plan.device_kind(device, cpus, gpus)  # what the throughput store keys on
    fit(train_config, train_set, val_set, out, resume=checkpoint is not None, on_epoch=report,
        extra=extra, device=device, save_best=False)


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
