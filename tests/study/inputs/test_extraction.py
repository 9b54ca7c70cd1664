"""Feature extraction as a Ray job: shards on extraction actors give the features one process
gives (to float16 tolerance), and a worker's bad input is the one-line error it is."""

from __future__ import annotations

import json

import pytest
import ray

from study.inputs import Workers, on_ray
from tests.helpers import SMALL_SETTINGS, assert_same_features
from vcrnet.errors import InputError
from vcrnet.features import CachedVCRDataset, extract_splits
from vcrnet.features.cache import is_complete

CPU_WORKERS = Workers(count=2, gpus=0, cpus=1)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_two_ray_workers_extract_what_one_process_does(synthetic_dir, synthetic_features, tmp_path):
    found = extract_splits(
        synthetic_dir,
        ("train",),
        tmp_path,
        SMALL_SETTINGS,
        progress=False,
        run=on_ray(CPU_WORKERS),
        shard_items=6,
        shard_images=2,
    )["train"]
    assert found.computed == ["text", "objects"]
    for entry, shards in ((found.text, 4), (found.objects, 4)):
        manifest = json.loads((entry / "manifest.json").read_text())
        assert manifest["shards"] == shards
        assert manifest["extracted_on"] == [ray.get_runtime_context().get_node_id()]
    assert_same_features(CachedVCRDataset(synthetic_features), CachedVCRDataset(found))


def test_a_workers_bad_image_is_one_line(vcr_copy, tmp_path):
    image = next((vcr_copy / "vcr1images").rglob("*.jpg"))
    image.write_bytes(image.read_bytes()[:200])  # a truncated JPEG: read fails on the worker
    with pytest.raises(InputError, match=f"{image}: cannot"):
        extract_splits(
            vcr_copy,
            ("val", "train"),
            tmp_path,
            SMALL_SETTINGS,
            progress=False,
            run=on_ray(CPU_WORKERS),
            shard_images=2,
        )
    assert len([p for p in tmp_path.glob("*-objects-*") if is_complete(p)]) < 2


def test_the_workers_follow_the_ray_they_run_on_and_none_waits_for_ever(monkeypatch):
    """Left out, a worker's resources are what this Ray's nodes have (2 CPUs, no GPU here: CPU
    workers sharing the node); a worker no node holds, or more workers than the machine holds,
    is one line, not actors pending for ever."""
    from study.inputs import extraction

    chosen = []
    monkeypatch.setattr(extraction, "on_ray", lambda workers: chosen.append(workers) or "run")
    assert extraction.workers_for(None, 2, None, None) == "run"
    assert chosen == [Workers(count=2, gpus=0.0, cpus=1.0)]
    extraction.workers_for(None, 1, None, None)
    assert chosen[-1] == Workers(count=1, gpus=0.0, cpus=2.0)
    with pytest.raises(InputError, match=r"--workers 3: this machine's Ray holds 2 worker"):
        extraction.workers_for(None, 3, None, 1.0)
    with pytest.raises(
        InputError,
        match=r"asks 2 CPUs and 1 GPUs, and no node has that \(the largest: 2 CPUs, 0 GPUs\)",
    ):
        extraction.workers_for(None, 1, 1.0, None)
