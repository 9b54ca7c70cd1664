"""The measured speed of training: seconds per training item per epoch, by features, device,
preset and batch size, recorded after each trial-epoch in the home's ``throughput.json`` and read
back by ``--dry-run`` (``cost.seconds_per_item``); ``tuner.ThroughputRecorder`` records. Imports
no Ray and no torch::

    {"version": 1, "seconds_per_item": {"features=<fp> device=cpu:1 preset=small batch=16":
                                        [0.0461, 0.0448, ...]}}   # the last KEEP_LAST epochs
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from vcrnet.atomic import write_text

if TYPE_CHECKING:
    from vcrnet.config import TrainConfig
    from vcrnet.features import FeatureSettings

KEEP_LAST = 20  # epochs kept per key; their median is the figure
STORE_VERSION = 1


class ThroughputKey(NamedTuple):
    """What a training item's time depends on. ``device``: ``device_kind``'s ``"cpu:1"``,
    ``"cuda:NVIDIA H200"`` or ``"cuda:NVIDIA H200/4"`` (4 trials a GPU); ``features``: the
    feature settings' fingerprint (``vcrnet.features.cache.fingerprint``)."""

    features: str
    device: str
    preset: str
    batch_size: int

    def id(self) -> str:
        return (
            f"features={self.features} device={self.device} preset={self.preset} "
            f"batch={self.batch_size}"
        )


def device_kind(device: str, cpus: float, gpus: float = 1.0) -> str:
    """A trial's hardware as the throughput store keys it: ``"cpu:<threads>"`` on the CPU (its
    CPUs, at least 1), ``"cuda:<device name>"`` on a GPU, ``"cuda:<device name>/<k>"`` where
    ``gpus`` (its share) is 1/k of one."""
    if not device.startswith("cuda"):
        return f"cpu:{max(1, int(cpus))}"
    import torch

    share = round(1 / gpus) if 0 < gpus < 1 else 1
    name = torch.cuda.get_device_name(torch.device(device))
    return f"cuda:{name}" + (f"/{share}" if share > 1 else "")


def measured_gpu(path: Path, gpus: float) -> str | None:
    """The GPU device kind this home's trials measured at a share of ``gpus`` a trial (the
    first found), for a driver that has no GPU of its own to name; None if none."""
    share = round(1 / gpus) if 0 < gpus < 1 else 1
    for key in _load(path):
        device = key.partition(" device=")[2].partition(" preset=")[0]
        name, _, k = device.partition("/")
        if name.startswith("cuda:") and (int(k) if k.isdigit() else 1) == share:
            return device
    return None


def train_items(metrics: dict) -> int:
    """The training items of an epoch of ``fit`` (after the dev split), from its metrics."""
    return round(metrics["train_items_per_s"] * metrics["train_seconds"])


def record_epoch(path: Path, key: ThroughputKey, epoch_seconds: float, train_items: int) -> None:
    """Add one epoch's seconds per training item (``epoch_seconds``: training and evaluation, as
    ``fit`` measures it) to the store at ``path``, keeping the last ``KEEP_LAST`` per key. One
    writer at a time (the driver's Tune callback): the file is replaced whole."""
    if train_items <= 0 or not math.isfinite(epoch_seconds) or epoch_seconds <= 0:
        return
    figures = _load(path)
    values = figures.get(key.id(), []) + [epoch_seconds / train_items]
    figures[key.id()] = values[-KEEP_LAST:]
    write_text(
        path, json.dumps({"version": STORE_VERSION, "seconds_per_item": figures}, indent=1) + "\n"
    )


def throughput_key(settings: FeatureSettings, device: str, config: TrainConfig) -> ThroughputKey:
    """The key of a trial of ``config`` on ``device`` (``device_kind``) over these features."""
    from vcrnet.features.cache import fingerprint

    return ThroughputKey(fingerprint(settings.to_dict()), device, config.preset, config.batch_size)


def measured(path: Path, key: ThroughputKey) -> list[float]:
    """The recorded seconds per item of ``key`` (the last ``KEEP_LAST`` epochs), oldest first."""
    return _load(path).get(key.id(), [])


def _load(path: Path) -> dict[str, list[float]]:
    """The store's figures; a missing file is empty, an unreadable one too (with a warning: a bad
    file must not stop a launch, and the next ``record_epoch`` replaces it)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        figures = data["seconds_per_item"]
        if not all(
            isinstance(v, list) and all(isinstance(x, int | float) and x > 0 for x in v)
            for v in figures.values()
        ):
            raise ValueError("a figure is not a list of positive numbers")
        return figures
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        warnings.warn(
            f"{path}: unreadable ({type(err).__name__}: {err}); ignored, as if empty", stacklevel=3
        )
        return {}
