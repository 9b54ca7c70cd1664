"""Feature extraction as a Ray job on the cluster's workers (``vcr-study data features
--address``, and ``launch --address`` when the study's features are missing).

The driver plans each missing entry (``vcrnet.features.extract``: it reads the split and writes
the row layout, a few MB); the shards run on extraction actors, each holding its encoders, loaded
once, and computing shard after shard on its GPU (images and wordpieces read in a thread beside
the encoder); every shard is written by its actor straight into the shared cache, appearing whole.
The driver shows one bar over shards and finishes each entry once all its shards are there; an
extraction killed half-way resumes from the shards it finished.

Actors, not Ray Data's ``map_batches``: the unit of work is a shard that writes its own file on
the shared storage, so only a shard number comes back to the driver. Ray Data would stream the
~220 GB of rows through the object store into a sink, and the resumable, atomic shards would have
to be rebuilt on top of it (and ``ray[data]`` is one dependency more). Actors stay off the
driver's node when other nodes can hold them: on a cluster the driver is the CPU-only head.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from vcrnet.errors import InputError
from vcrnet.features import FeatureSettings
from vcrnet.features.extract import RunShards, Shard, ShardWorker, progress_bar


@dataclass(frozen=True)
class Workers:
    """The extraction actors: ``count`` (None: as many as the cluster holds, at least one: one
    per GPU, or per ``cpus`` CPUs), each with ``gpus`` GPUs and ``cpus`` CPUs (its threads)."""

    count: int | None = None
    gpus: float = 1.0
    cpus: float = 1.0

    def check(self) -> None:
        checks = [
            (self.count is None or self.count >= 1, "--workers", "at least 1"),
            (self.gpus >= 0, "--gpus-per-worker", "0 or more"),
            (self.cpus > 0, "--cpus-per-worker", "positive"),
        ]
        for ok, option, expected in checks:
            if not ok:
                raise InputError(f"{option}: must be {expected}")


class Extractor:
    """One extraction actor: a ``ShardWorker`` on this node's GPU (or CPUs)."""

    def __init__(self, settings: FeatureSettings, threads: int):
        import ray
        import torch

        torch.set_num_threads(threads)
        cuda = torch.cuda.is_available() and bool(ray.get_gpu_ids())
        self.worker = ShardWorker(
            settings, "cuda" if cuda else "cpu", image_batch=16 if cuda else 4, threads=threads
        )
        self.node = ray.get_runtime_context().get_node_id()

    def run(self, position: int, shard: Shard) -> tuple[int, str]:
        self.worker(shard)
        return position, self.node


def on_ray(workers: Workers) -> RunShards:
    """``RunShards`` on the connected Ray cluster's extraction actors."""

    def run(
        shards: list[Shard], settings: FeatureSettings, progress: bool
    ) -> Iterator[tuple[Shard, str]]:
        import ray
        from ray.util import ActorPool

        if not shards:
            return
        _check_visible(shards)
        actors = _start(workers, settings, len(shards))
        try:
            pool = ActorPool(actors)
            done = pool.map_unordered(
                lambda a, i: a.run.remote(i, shards[i]), list(range(len(shards)))
            )
            for position, node in progress_bar(_unwrapped(done), len(shards), progress):
                yield shards[position], node
        finally:
            for actor in actors:
                ray.kill(actor)

    return run


def _start(workers: Workers, settings: FeatureSettings, shards: int) -> list:
    """The actors: first on the nodes other than the driver's, as many as fit there now; any
    more wherever Ray places them (the autoscaler adding GPU nodes for them)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    places = [
        node["NodeID"]
        for node in ray.nodes()
        if node.get("Alive") and node["NodeID"] != here
        for _ in range(_fits(node["Resources"], workers))
    ]
    count = min(
        shards, workers.count or max(1, len(places) or _fits(ray.cluster_resources(), workers))
    )
    remote = ray.remote(Extractor)
    return [
        remote.options(
            num_cpus=workers.cpus,
            num_gpus=workers.gpus,
            max_restarts=2,
            max_task_retries=2,
            scheduling_strategy=NodeAffinitySchedulingStrategy(places[k], soft=False)
            if k < len(places)
            else "DEFAULT",
        ).remote(settings, max(1, int(workers.cpus)))
        for k in range(count)
    ]


def _fits(resources: dict, workers: Workers) -> int:
    """How many actors ``resources`` hold."""
    fits = [resources.get("CPU", 0) // workers.cpus]
    if workers.gpus:
        fits.append(resources.get("GPU", 0) // workers.gpus)
    return int(min(fits))


def _unwrapped(done: Iterator) -> Iterator:
    """An actor's known error (bad image, bad encoder) as the one-line error it is."""
    import ray

    try:
        yield from done
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, InputError):
            raise InputError(str(error.cause)) from None
        raise


def _check_visible(shards: list[Shard]) -> None:
    """On a cluster: every node sees the planned entries and the images where the driver does,
    and can write the cache (``cluster.check_shared``)."""
    import ray

    from study.cluster import check_shared

    if len(ray.nodes()) < 2:
        return
    folders = sorted({s.folder for s in shards})
    paths = {f"feature cache {folder.name}": folder for folder in folders}
    paths.update(
        {
            f"--data (an image of {s.folder.name})": s.jobs[0].path
            for s in shards
            if s.kind == "objects"
        }
    )
    check_shared(paths, folders[0].parent)


def workers_for(
    address: str | None, count: int | None, gpus: float | None, cpus: float | None
) -> RunShards | None:
    """Where ``data features`` computes shards: None (this process: no ``address`` nor
    ``count``), else actors on the Ray at ``address`` (joined) or on a local Ray of ``count``
    workers. Left out, a worker's resources follow the Ray it runs on: a GPU and 4 CPUs where
    a node has a GPU, else a CPU worker as large as a node. A worker no node can hold is refused
    on this machine's Ray and named in a warning on a cluster (an autoscaler may add one)."""
    if not address and not count:
        return None
    import warnings

    from study import cluster

    cluster.join(address)
    largest_cpus, largest_gpus = cluster.largest()
    if gpus is None:
        gpus = 1.0 if largest_gpus >= 1 else 0.0
    if cpus is None:  # a GPU worker's threads; CPU workers share a node between them
        cpus = min(4.0, largest_cpus) if gpus else max(1.0, largest_cpus // (count or 1))
    chosen = Workers(count=count, gpus=gpus, cpus=cpus)
    chosen.check()
    if not cluster.fits({"CPU": cpus, "GPU": gpus}):
        problem = (
            f"an extraction worker asks {cpus:g} CPUs and {gpus:g} GPUs, and no node has that "
            f"(the largest: {cluster.largest_node()})"
        )
        if not address:
            raise InputError(f"--gpus-per-worker/--cpus-per-worker: {problem}")
        warnings.warn(f"{problem}; workers wait until the autoscaler adds one", stacklevel=2)
    elif not address and count:  # this machine's Ray: workers beyond it would wait for ever
        import ray

        room = _fits(ray.cluster_resources(), chosen)
        if count > room:
            raise InputError(
                f"--workers {count}: this machine's Ray holds {room} worker(s) of {cpus:g} CPUs "
                f"and {gpus:g} GPUs ({cluster.largest_node()})"
            )
    return on_ray(chosen)
