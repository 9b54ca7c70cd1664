"""The Ray Tune function trainable: a thin wrapper around ``vcrnet.train.fit``.

It turns the trial's flat config into a TrainConfig (through the search space), reads the shared
feature cache (never recomputes it; from a copy on the node's local disk when asked,
``vcrnet.features.stage``), resumes from Tune's checkpoint when there is one, and reports every
epoch with a checkpoint. Everything it is handed is an absolute path: trials change directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

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
    out = Path(tune.get_context().get_trial_dir()).absolute() / "run"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            for name in (CHECKPOINT, METRICS):
                shutil.copy2(Path(folder) / name, out / name)

    def report(metrics: dict, run_dir: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="report-") as folder:
            for name in (CHECKPOINT, METRICS):
                shutil.copy2(run_dir / name, Path(folder) / name)
            tune.report({**metrics, "node_id": node_id},
                        checkpoint=tune.Checkpoint.from_directory(folder))

    device = "cuda" if torch.cuda.is_available() and tune.get_context().get_trial_resources() \
        .required_resources.get("GPU", 0) > 0 else "cpu"
    fit(train_config, train_set, val_set, out, resume=checkpoint is not None, on_epoch=report,
        extra=extra, device=device)
