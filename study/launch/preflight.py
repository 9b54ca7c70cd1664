"""What a launch checks before it writes anything: the options (a resumed study's own, from its
record), the space and the ``--set`` overrides, the name free in this home and in the tracking
store, the store itself, a cluster's address (joinable), and the home's free space for the
study's plan (``study_plan``: ``cost.estimate`` of this study on these resources, which
``--dry-run`` prints)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import warnings

from study import cluster, inputs, store, tracking
from study.inputs import Features
from study.launch import cost, throughput
from study.search import SearchSpace, load_space
from study.store import LaunchOptions
from vcrnet.config import TrainConfig
from vcrnet.errors import InputError


def resolved_options(
    options: LaunchOptions, resume: bool
) -> tuple[LaunchOptions, SearchSpace, str | None]:
    """The options the study runs with (a resumed study's own, from its record), checked and
    named, its search space, and the line to say if the model's preset was chosen for it
    (``inputs.model_values``; recorded in its ``--set`` values); refused before anything is
    written where a new study would take the name of one that exists."""
    if resume:
        if not options.name:
            raise InputError("--resume: needs --name of the study to continue")
        options = _resumed(options)
    options.check()
    store.check_home()
    options.name = options.name or time.strftime("study-%Y%m%d-%H%M%S")
    if options.tracking_uri:  # a password in the URI is never saved with the study
        options.tracking_uri = tracking.move_credentials_to_env(options.tracking_uri)
        options.tracking_uri = tracking.absolute_uri(options.tracking_uri)
    space = load_space(options.space)
    options.space = str(space.path)
    digest = hashlib.sha256(space.path.read_bytes()).hexdigest()
    if resume and options.space_sha256 not in (None, digest):
        raise InputError(
            f"--space {space.path}: the file changed since study {options.name} started; its "
            "trials would train other settings than they logged: put it back as it was, or "
            "launch a new study"
        )
    options.space_sha256 = digest
    note = None
    if not resume and not _sets_preset(space):  # recorded: a resumed study keeps it
        options.overrides, note = inputs.model_values(options.overrides, options.data is None)
    check_overrides(space, options.overrides)
    if not resume:
        check_name_is_free(options.name)
    return options, space, note


# What a resumed study takes from the options given: the resources a trial asks for (a study that
# asked for more than its cluster has must not be stuck), its retries, and where it runs now (a
# SLURM job requeued on other nodes has a new Ray address, node-local disks and session folders).
# The rest is the study.
ON_RESUME = (
    "cpus_per_trial",
    "gpus_per_trial",
    "max_failures",
    "address",
    "local_cache",
    "ray_temp_dir",
)


def _resumed(given: LaunchOptions) -> LaunchOptions:
    """The record's options, with the ``ON_RESUME`` options given (those not at their default)
    taken; any other option given that differs from the study's named in one warning."""
    record = store.load(given.name).options
    store.check_resumable(given.name)
    defaults = LaunchOptions()
    ignored = []
    for field in dataclasses.fields(LaunchOptions):
        value = getattr(given, field.name)
        if field.name == "name" or value == getattr(defaults, field.name):
            continue  # not given (or given as its default: the same to us)
        if field.name in ON_RESUME:
            setattr(record, field.name, value)
        elif value != getattr(record, field.name):
            ignored.append(
                "--" + ("set/--epochs" if field.name == "overrides" else _flag(field.name))
            )
    if ignored:
        warnings.warn(
            f"--resume: {', '.join(ignored)} ignored: a resumed study keeps its own (only "
            f"{', '.join('--' + _flag(n) for n in ON_RESUME)} may change)",
            stacklevel=3,
        )
    return record


def _sets_preset(space: SearchSpace) -> bool:
    return (
        "preset" in space.fixed
        or "preset" in space.params
        or any("preset" in row for row in space.trials or ())
    )


def _flag(field: str) -> str:
    return field.replace("_", "-")


def check_name_is_free(name: str) -> None:
    """A new study's name must not be a study of this home, nor a Ray Tune experiment left under
    ray_results (Tune would overwrite its ``tuner.pkl``: ray-project/ray#35812)."""
    if store.record_path(name).exists():
        raise InputError(
            f"--name {name}: a study of that name exists; pass --resume to continue "
            f"it, choose another name, or remove it with `vcr-study delete --name "
            f"{name}`"
        )
    for leftover in (store.experiment_dir(name), store.journal_path(name)):
        if leftover.exists():
            raise InputError(
                f"--name {name}: {leftover} is left from an earlier study of that "
                f"name; remove it with `vcr-study delete --name {name}`, or choose "
                "another name"
            )


def check_store_and_cluster(options: LaunchOptions, resume: bool) -> str | None:
    """The tracking store (a new study's name free there), and a cluster (a server store, its
    address joinable), checked before features are resolved; returns the cluster's address
    (None: a local Ray)."""
    uri = store.tracking_uri(options)
    tracking.check_store(uri)
    if not resume and tracking.store_exists(uri):  # before features that may take hours
        client = tracking.open_client(uri)
        tracking.check_name_free(client, options.name, store.home())
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        cluster.check_address(address)  # a malformed address first, then the store it needs
        tracking.check_tracking(uri)
        cluster.check_joinable(address)
    return address


def check_resources(options: LaunchOptions, address: str | None) -> None:
    """A trial's resources fit a node: on this machine (a local Ray) refused in one line where
    they never could; on a cluster (joined; an autoscaler may add nodes) a warning where no live
    node can hold one now (the progress line says what is pending while it waits)."""
    cpus, gpus = options.cpus_per_trial, options.gpus_per_trial
    if address is None:
        have_cpus, have_gpus = local_resources()
        if cpus > have_cpus:
            raise InputError(
                f"--cpus-per-trial {cpus:g}: this machine has {have_cpus:g} CPUs, so no trial "
                "could ever start"
            )
        if gpus > have_gpus:
            has = f"{have_gpus:g} GPUs" if have_gpus else "no GPU (torch finds none)"
            raise InputError(
                f"--gpus-per-trial {gpus:g}: this machine has {has}, so no trial could ever "
                "start; pass --gpus-per-trial 0 to train on the CPU"
            )
        return
    if not cluster.fits({"CPU": cpus, "GPU": gpus}):
        warnings.warn(
            f"--cpus-per-trial {cpus:g} --gpus-per-trial {gpus:g}: no node of the cluster at "
            f"{address} can hold a trial now (the largest: {cluster.largest_node()}); trials "
            "wait until the "
            "autoscaler adds such a node",
            stacklevel=2,
        )


def check_overrides(space: SearchSpace, overrides: dict) -> None:
    for key in overrides:
        if key in space.params:
            raise InputError(
                f"--set {key}: is searched by {space.path.name}; a --set would hide the search"
            )
    TrainConfig.from_dict({**space.fixed, **overrides}, where="--set")


def check_free_space(options: LaunchOptions, space: SearchSpace, found: Features) -> None:
    """Refuse a new study where the home has not the room its checkpoints will need."""
    if options.ignore_free_space:
        return
    study_plan(options, space, found, *local_resources()).check_free_space(store.home())


def study_plan(
    options: LaunchOptions, space: SearchSpace, found: Features, cpus: float, gpus: float
) -> cost.Plan:
    """What the study will cost on ``cpus`` and ``gpus``, from this home's measured speed of
    the same features, device and model (else docs/benchmarks.md's)."""
    text_dim = _text_dim(found)
    config = _largest_config(space, options.overrides, text_dim)
    key = throughput.throughput_key(found.settings, _device_kind(options), config)
    return cost.estimate(
        trials=len(space.trials) if space.is_grid else options.trials,
        epochs=space.max_epochs(options.overrides),
        grace=options.grace_period,
        asha=options.asha,
        concurrent=options.concurrent,
        cpus=cpus,
        cpus_per_trial=options.cpus_per_trial,
        gpus=gpus,
        gpus_per_trial=options.gpus_per_trial,
        train_items=round(_train_items(found) * (1 - config.dev_fraction)),
        seconds=cost.seconds_per_item(store.throughput_file(), key),
        checkpoint=cost.checkpoint_bytes(config, text_dim),
        best=cost.best_bytes(config, text_dim),
        approaches=len(space.approaches()),
        disk_free=cost.free_bytes(store.home()),
        keep_checkpoints=options.keep_checkpoints,
    )


def local_resources() -> tuple[float, float]:
    """This machine's CPUs and GPUs, as a local Ray gets them."""
    import torch

    return float(os.cpu_count() or 1), float(torch.cuda.device_count())


def cluster_resources() -> tuple[float, float]:
    """The joined Ray cluster's CPUs and GPUs, as it reports them now."""
    import ray

    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0)), float(resources.get("GPU", 0))


def _largest_config(space: SearchSpace, overrides: dict, text_dim: int) -> TrainConfig:
    """The trials' config with the largest checkpoint (a searched space: its fixed values)."""
    rows = [{**row, **overrides} for row in space.trials] if space.is_grid else [overrides]
    configs = [space.config(row) for row in rows]
    return max(configs, key=lambda c: cost.checkpoint_bytes(c, text_dim))


def _device_kind(options: LaunchOptions) -> str:
    """The trials' device as the throughput store keys it (a cluster's GPU: this machine's, else
    the one the home's trials measured)."""
    if options.gpus_per_trial <= 0:
        return throughput.device_kind("cpu", options.cpus_per_trial)
    import torch

    if not torch.cuda.is_available():  # the cluster's, as its trials recorded it
        return (
            throughput.measured_gpu(store.throughput_file(), options.gpus_per_trial)
            or "cuda:(a GPU this machine cannot name, none measured yet)"
        )
    return throughput.device_kind("cuda", options.cpus_per_trial, options.gpus_per_trial)


def _train_items(found: Features) -> int:
    """The train split's questions (one a line of train.jsonl)."""
    with (found.data / "train.jsonl").open("rb") as lines:
        return sum(1 for line in lines if line.strip())


def _text_dim(found: Features) -> int:
    """The text features' width: the cache's, else the encoder's configuration."""
    from vcrnet.features import cache

    entry = found.splits["train"].text
    if cache.is_complete(entry):
        return int(cache.read_manifest(entry)["dim"])
    from transformers import AutoConfig

    from vcrnet.features.text import resolve_text_encoder

    name = resolve_text_encoder(found.settings.text_encoder)
    return int(AutoConfig.from_pretrained(name, local_files_only=True).hidden_size)
