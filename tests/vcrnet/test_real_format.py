"""Real VCR files, not only our own: a large JPEG, a polygon of hundreds of points, a line with
VCR's real key set, a test line without labels or ``*_orig``, at R2C's 768x384 canvas."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vcrnet.data import read_split
from vcrnet.data.check import check_split
from vcrnet.features import CachedVCRDataset, FeatureSettings, collate, extract_split

MOVIE = "lsmdc_3015_CHARLIE_ST_CLOUD"
IMAGE = f"{MOVIE}/3015_CHARLIE_ST_CLOUD_00.24.00.783-00.24.04.287@0"


@pytest.fixture(scope="module")
def real_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("vcr1")
    (root / "vcr1images" / MOVIE).mkdir(parents=True)
    width, height = 1920, 797
    t = np.linspace(0, 2 * np.pi, 420, endpoint=False)
    person = np.stack([600 + 180 * np.cos(t), 420 + 300 * np.sin(t)], 1).round().astype(int)
    horse = np.array([[1100, 300], [1700, 320], [1650, 760], [1150, 700]])
    image = Image.new("RGB", (width, height), (90, 110, 130))
    draw = ImageDraw.Draw(image)
    draw.polygon([tuple(p) for p in person.tolist()], fill=(200, 40, 40))
    draw.polygon([tuple(p) for p in horse.tolist()], fill=(120, 80, 30))
    image.save(root / "vcr1images" / f"{IMAGE}.jpg", quality=90)
    meta = {
        "boxes": [
            [420.0, 120.0, 780.0, 720.0, 0.998],
            [1100.0, 300.0, 1700.0, 760.0, 0.97],
            [10.0, 10.0, 200.0, 300.0, 0.61],
        ],
        "segms": [[person.tolist()], [horse.tolist(), []], [[[10, 10], [200, 10], [200, 300]]]],
        "names": ["person", "horse", "person"],
        "width": width,
        "height": height,
    }
    (root / "vcr1images" / f"{IMAGE}.json").write_text(json.dumps(meta))
    line = {
        "movie": "3015_CHARLIE_ST_CLOUD",
        "objects": ["person", "horse", "person"],
        "interesting_scores": [0, 1],
        "answer_likelihood": "possible",
        "img_fn": f"{IMAGE}.jpg",
        "metadata_fn": f"{IMAGE}.json",
        "answer_orig": "1 is going to ride 2.",
        "question_orig": "What is 1 going to do?",
        "rationale_orig": "1 is standing next to 2 and holding the reins.",
        "question": ["What", "is", [0], "going", "to", "do", "?"],
        "answer_match_iter": [3, 0, 2, 1],
        "answer_sources": [3287, 0, 10184, 26],
        "answer_choices": [
            [[0], "is", "going", "to", "sleep", "."],
            [[0], "is", "going", "to", "ride", [1], "."],
            [[0], "will", "dance", "."],
            ["Everyone", "will", "leave", "."],
        ],
        "answer_label": 1,
        "rationale_choices": [
            [[0], "is", "holding", "the", "reins", "of", [1], "."],
            ["It", "is", "late", "."],
            [[0, 2], "are", "at", "a", "party", "."],
            ["People", "leave", "at", "night", "."],
        ],
        "rationale_sources": [0, 1, 2, 3],
        "rationale_match_iter": [0, 1, 2, 3],
        "rationale_label": 0,
        "img_id": "train-1",
        "question_number": 1,
        "annot_id": "train-1",
        "match_fold": "train-0",
        "match_index": 1,
    }
    (root / "train.jsonl").write_text(json.dumps(line) + "\n")
    test_line = {
        k: v
        for k, v in line.items()
        if k not in ("answer_label", "rationale_label") and not k.endswith("_orig")
    }
    (root / "test.jsonl").write_text(json.dumps({**test_line, "annot_id": "test-0"}) + "\n")
    return root


def test_reads_and_checks_real_lines(real_like):
    (item,) = read_split(real_like, "train")
    assert item.answer_label == 1 and item.question[2] == [0]
    (test_item,) = read_split(real_like, "test")
    assert test_item.answer_label is None
    summary = check_split(real_like, "train")
    assert summary.kept == [4]  # the image + both persons ("Everyone") + the horse


def test_features_at_r2c_canvas(real_like, tmp_path):
    settings = FeatureSettings(image_size=(768, 384))
    for split in ("train", "test"):
        found = extract_split(real_like, split, tmp_path, settings, progress=False)
        batch = collate([CachedVCRDataset(found)[0]])
        assert batch["objects"].shape == (4, 2048)  # packed: the item's 4 objects
        assert np.isfinite(batch["objects"].numpy()).all()
        # 1920x797 fits 768x384 at scale 0.4, centred with 32 pixels on top
        np.testing.assert_allclose(batch["boxes"][0, 0].numpy(), [0, 32, 768, 351])
        np.testing.assert_allclose(batch["boxes"][0, 1].numpy(), [168, 80, 312, 320])
    assert batch["answer_label"].tolist() == [-1]
