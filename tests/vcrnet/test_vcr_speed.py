"""benchmarks/vcr_speed.py at a small size: its VCR-shaped cache is the project's format, its
lengths come from VCR's means or a folder's own questions, and its report holds every figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import vcr_speed
from vcrnet.data import ground_item, read_split
from vcrnet.features import collate
from vcrnet.features.batches import Batches, epoch_order, item_sizes

SMALL = [
    "--device",
    "cpu",
    "--questions",
    "40",
    "--dim",
    "32",
    "--batch-size",
    "8",
    "--batches",
    "3",
    "--preset",
    "tiny",
    "--workers",
    "0",
    "--bucket-batches",
    "2",
]


def test_the_benchmark_reports_every_path(tmp_path):
    report = vcr_speed.main(
        [*SMALL, "--methods", "softmax", "--compare-shuffle", "--out", str(tmp_path / "speed.json")]
    )
    assert json.loads((tmp_path / "speed.json").read_text()) == report
    assert report["items"] == 24 and report["text_dim"] == 32
    assert report["packed_equals_collate"] is True
    # VCR's shape: 20 question + 20 answer + 16 rationale words... per item: ~541 rows
    assert 450 < report["text_rows_per_item"] < 650
    assert 4 <= report["objects_per_item"] <= 10
    assert set(report["input_items_per_s"]) == {"packed", "packed_host", "collate_0_workers"}
    assert all(rate > 0 for rate in report["input_items_per_s"].values())
    assert set(report["input_speedup_vs_collate"]) == {"packed", "packed_host"}
    softmax = report["methods"]["softmax"]
    assert set(softmax) == {
        "train_items_per_s",
        "model_items_per_s",
        "train_over_model",
        "vcr_epoch_minutes",
        "model_items_per_s_shuffled",
    }
    assert all(value > 0 for value in softmax.values())
    padded = report["padded_text_rows_per_item"]
    assert padded["bucketed"] >= report["text_rows_per_item"]


def test_its_cache_is_read_like_an_extracted_one(tmp_path):
    args = vcr_speed.parse_args([*SMALL, "--cache", str(tmp_path)])
    dataset = vcr_speed.make_dataset(args, tmp_path)
    assert len(dataset) == 40
    again = vcr_speed.make_dataset(args, tmp_path)  # reused, not written twice
    assert again.features == dataset.features
    order = epoch_order(item_sizes(dataset), 8, seed=0, bucket_batches=2)
    for batch, positions in zip(Batches(dataset, order), order):
        expected = collate([dataset[int(i)] for i in positions])
        assert all(torch.equal(batch[k], v) for k, v in expected.items())
    index = np.asarray(dataset.arrays["index"])
    # pair 4 + 4a + r: question and answer a as context, rationale r as choice
    assert (
        index[:, 4:, 1].reshape(-1, 4, 4) == (index[:, :1, 1] + index[:, :4, 2])[:, :, None]
    ).all()
    assert (index[:, 4:, 2].reshape(-1, 4, 4) == index[:, 4:8, 2][:, None, :]).all()


def test_lengths_can_come_from_a_vcr_folder(synthetic_dir, tmp_path):
    args = vcr_speed.parse_args([*SMALL, "--lengths-from", str(synthetic_dir), "--questions", "12"])
    dataset = vcr_speed.make_dataset(args, tmp_path)
    known = set()
    for item in read_split(synthetic_dir, "train"):
        g = ground_item(item)
        known.add(
            (
                len(g.question.words),
                tuple(len(a.words) for a in g.answers),
                tuple(len(r.words) for r in g.rationales),
                1 + len(g.kept),
            )
        )
    a = dataset.arrays
    for i in range(len(dataset)):
        index, objects = a["index"][i], a["offsets"][i + 1] - a["offsets"][i]
        drawn = (index[0, 1], tuple(index[:4, 2]), tuple(index[4:8, 2]), objects)
        assert drawn in known


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_a_gpu_the_packed_path_makes_collates_batches(tmp_path):
    dataset = vcr_speed.make_dataset(vcr_speed.parse_args(SMALL), tmp_path)
    order = epoch_order(item_sizes(dataset), 8, seed=0, bucket_batches=2)
    for batch, positions in zip(Batches(dataset, order, "cuda"), order):
        expected = collate([dataset[int(i)] for i in positions])
        for key, value in expected.items():
            assert torch.equal(batch[key].cpu(), value), key
        assert batch["question_lengths"].device.type == "cpu"
        assert batch["question"].device.type == "cuda"
