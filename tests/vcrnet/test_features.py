"""Cached features: the text and object extraction, the cache's reuse and atomicity, the batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, SMALL_SETTINGS, assert_same_features, read_lines
from vcrnet.data import ground_item, read_split, write_synthetic
from vcrnet.features import CachedVCRDataset, collate, extract_split, extract_splits
from vcrnet.features import extract as extract_module
from vcrnet.features.cache import is_complete
from vcrnet.features.text import TextEncoder, resolve_text_encoder


def test_collate_shapes_and_contents(synthetic_dir, synthetic_features):
    dataset = CachedVCRDataset(synthetic_features)
    items = read_split(synthetic_dir, "train")
    assert len(dataset) == len(items) == 24
    batch = collate([dataset[i] for i in range(5)])
    B, D = 5, dataset.text_dim
    assert D == 384
    lq, la = batch["question"].shape[2], batch["answers"].shape[2]
    lc, lr = batch["rationale_query"].shape[3], batch["rationales"].shape[3]
    k, m = batch["object_index"].shape[1], batch["objects"].shape[0]
    expected = {
        "question": (B, 4, lq, D),
        "question_tags": (B, 4, lq),
        "question_mask": (B, 4, lq),
        "question_lengths": (B, 4),
        "answers": (B, 4, la, D),
        "answer_tags": (B, 4, la),
        "answer_mask": (B, 4, la),
        "answer_lengths": (B, 4),
        "rationale_query": (B, 4, 4, lc, D),
        "rationale_query_tags": (B, 4, 4, lc),
        "rationale_query_mask": (B, 4, 4, lc),
        "rationale_query_lengths": (B, 4, 4),
        "rationales": (B, 4, 4, lr, D),
        "rationale_tags": (B, 4, 4, lr),
        "rationale_mask": (B, 4, 4, lr),
        "rationale_lengths": (B, 4, 4),
        "objects": (m, 2048),
        "object_index": (B, k),
        "object_classes": (B, k),
        "object_mask": (B, k),
        "boxes": (B, k, 4),
        "answer_label": (B,),
        "host_answer_label": (B,),
        "rationale_label": (B,),
        "index": (B,),
    }
    assert {name: tuple(t.shape) for name, t in batch.items()} == expected
    assert m == batch["object_mask"].sum()  # the real objects, packed
    assert torch.equal(
        batch["objects"][batch["object_index"][batch["object_mask"]]], batch["objects"]
    )
    for prefix in ("question", "answer", "rationale_query", "rationale"):
        assert torch.equal(batch[f"{prefix}_lengths"], batch[f"{prefix}_mask"].sum(-1))
    assert batch["question"].dtype == torch.float32 and batch["question_mask"].dtype == torch.bool
    for b in range(B):
        g = ground_item(items[b])
        assert batch["object_mask"][b].sum() == 1 + len(g.kept)
        assert batch["object_classes"][b, : 1 + len(g.kept)].tolist() == g.classes
        for i in range(4):
            n = len(g.question.words)
            assert batch["question_mask"][b, i].sum() == n
            assert batch["question_tags"][b, i, :n].tolist() == g.question.tags
            answer_tags = g.answers[i].tags
            assert batch["answer_tags"][b, i, : len(answer_tags)].tolist() == answer_tags
            for r in range(4):
                query_tags = g.question.tags + g.answers[i].tags
                got = batch["rationale_query_tags"][b, i, r, : len(query_tags)]
                assert got.tolist() == query_tags
                assert batch["rationale_mask"][b, i, r].sum() == len(g.rationales[r].words)
        assert batch["answer_label"][b] == items[b].answer_label
        assert batch["rationale_label"][b] == items[b].rationale_label
    # padding is zero, real rows are not
    assert batch["question"][~batch["question_mask"]].abs().sum() == 0
    assert (batch["question"][batch["question_mask"]].abs().sum(-1) > 0).all()
    # the whole image is object 0 and its box is the image's window on the canvas
    assert (batch["object_classes"][:, 0] == 0).all()
    assert (batch["boxes"][:, 0, 2] <= SMALL_SETTINGS.image_size[0]).all()


def test_word_vectors_average_their_wordpieces():
    from transformers import AutoModel, AutoTokenizer

    encoder = TextEncoder("minilm", layer=-2)
    context, choice = ["Is", "Casey", "unhappily", "waiting", "?"], ["Yes", ",", "Riley", "is"]
    got = encoder.encode([(context, choice)])[0]
    path = resolve_text_encoder("minilm")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    enc = tokenizer(context, choice, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[-2][0]
    word_ids, seq_ids = enc.word_ids(0), enc.sequence_ids(0)
    for seq, words, vectors in ((0, context, got.context), (1, choice, got.choice)):
        assert vectors.shape == (len(words), 384)
        for w in range(len(words)):
            pieces = [
                p for p, (wid, s) in enumerate(zip(word_ids, seq_ids)) if wid == w and s == seq
            ]
            np.testing.assert_allclose(vectors[w], hidden[pieces].mean(0).numpy(), atol=1e-4)
    assert len([w for w, s in zip(word_ids, seq_ids) if w == 2 and s == 0]) > 1  # "unhappily"


def _forbid(monkeypatch, *names):
    def boom(*args, **kwargs):
        raise AssertionError("the cache was recomputed")

    for name in names:
        monkeypatch.setattr(extract_module, name, boom)


def test_second_run_encodes_nothing_and_new_settings_make_a_new_entry(
    synthetic_dir, tmp_path, monkeypatch
):
    first = extract_split(synthetic_dir, "val", tmp_path, SMALL_SETTINGS, progress=False)
    assert first.computed == ["text", "objects"]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")}
    with monkeypatch.context() as m:
        _forbid(m, "TextEncoder", "ObjectFeatureExtractor", "read_split")
        second = extract_split(synthetic_dir, "val", tmp_path, SMALL_SETTINGS, progress=False)
    assert second.computed == [] and (second.text, second.objects) == (first.text, first.objects)
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")}
    from dataclasses import replace

    with monkeypatch.context() as m:
        _forbid(m, "ObjectFeatureExtractor")
        third = extract_split(
            synthetic_dir, "val", tmp_path, replace(SMALL_SETTINGS, text_layer=-1), progress=False
        )
    assert third.computed == ["text"] and third.text != first.text
    assert third.objects == first.objects


def test_a_failed_extraction_resumes_from_its_finished_shards(synthetic_dir, tmp_path, monkeypatch):
    calls = []

    def fail_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # like Ctrl-C half-way through the images
        return original(*args, **kwargs)

    original = extract_module.ShardWorker._run_images
    monkeypatch.setattr(extract_module.ShardWorker, "_run_images", fail_on_third_batch)
    shards = {"shard_items": 10, "shard_images": 2}  # 3 text shards; objects: 4 of 2 images
    with pytest.raises(KeyboardInterrupt):
        extract_splits(
            synthetic_dir, ("train",), tmp_path, SMALL_SETTINGS, progress=False, **shards
        )
    # the text entry was finished; the objects entry is not there, only its first shards
    assert [p.name.split("-")[1] for p in tmp_path.iterdir() if is_complete(p)] == ["text"]
    partial = next(tmp_path.glob(".train-objects-*.partial"))
    finished = {p: p.stat().st_mtime_ns for p in partial.glob("features-*.npy")}
    assert len(finished) == 2 and not list(partial.glob(".*tmp*"))  # a batch is a shard here
    monkeypatch.undo()
    done = extract_splits(
        synthetic_dir,
        ("train",),
        tmp_path,
        SMALL_SETTINGS,
        progress=False,
        shard_items=5,
        shard_images=1,
    )["train"]  # resumed: its own sizes kept
    assert done.computed == ["objects"] and len(CachedVCRDataset(done)) == 24
    kept = {p.name: (done.objects / p.name).stat().st_mtime_ns for p in finished}
    assert kept == {p.name: t for p, t in finished.items()}  # not computed again
    manifest = json.loads((done.objects / "manifest.json").read_text())
    assert manifest["shards"] == len(list(done.objects.glob("features-*.npy"))) > 2
    assert not list(tmp_path.glob(".*"))  # nothing partial left


KILL_SCRIPT = """
import sys
from vcrnet.features import FeatureSettings, extract_splits
extract_splits(sys.argv[1], ("train",), sys.argv[2], FeatureSettings(image_size=(256, 128)),
               progress=False, shard_items=10)
"""


def test_a_killed_extraction_is_never_taken_as_complete(tmp_path):
    data = write_synthetic(tmp_path / "d", seed=5, sizes={"train": 120, "val": 3, "test": 3})
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, data, cache],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(cache.glob(".train-text-*.partial/features-*")):
        time.sleep(0.1)
    time.sleep(0.5)  # inside the text extraction (12 shards, several seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = list(cache.glob(".train-text-*.partial/features-*.npy"))
    assert 0 < len(written) < 12, "the kill came too early or too late to test anything"
    assert not [p for p in cache.iterdir() if not p.name.startswith(".")]  # nothing complete
    stamps = {p.name: p.stat().st_mtime_ns for p in written}
    done = extract_split(data, "train", cache, SMALL_SETTINGS, progress=False)
    assert done.computed == ["text", "objects"]
    assert is_complete(done.text) and is_complete(done.objects)
    assert {n: (done.text / n).stat().st_mtime_ns for n in stamps} == stamps  # kept, not redone
    assert not list(cache.glob(".*"))  # the dead process's temporary and the partials are gone
    assert len(CachedVCRDataset(done)) == 120


def test_sharded_extraction_reads_as_one_process_wrote_it(
    synthetic_dir, synthetic_features, tmp_path
):
    """Shards of a few items and images, read through ShardedRows: the same batches."""
    sharded = extract_splits(
        synthetic_dir,
        ("train",),
        tmp_path,
        SMALL_SETTINGS,
        progress=False,
        shard_items=5,
        shard_images=3,
    )["train"]
    assert json.loads((sharded.text / "manifest.json").read_text())["shards"] == 5
    one, many = CachedVCRDataset(synthetic_features), CachedVCRDataset(sharded)
    assert_same_features(one, many)


def test_cli_features_then_cached(synthetic_dir, tmp_path, cli):
    args = (
        "data",
        "features",
        synthetic_dir,
        "--cache",
        tmp_path,
        "--split",
        "val",
        "--image-size",
        "256x128",
    )
    code, out, err = cli(*args)
    assert code == 0, err
    assert "val text: extracted" in out and "val objects: extracted" in out
    assert "random initialisation" in err  # no ImageNet weights on this machine
    code, out, _ = cli(*args)
    assert code == 0 and "val text: cached" in out and "val objects: cached" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (("--image-size", "12x"), "--image-size"),
        (("--split", "dev"), "--split"),
        (("--image-weights", "/nonexistent/resnet.pth"), "--image-weights /nonexistent/resnet.pth"),
        (("--text-encoder", "/nonexistent/encoder"), "--text-encoder '/nonexistent/encoder'"),
        (("--text-layer", "9"), "--text-layer 9"),
        (("--feature-storage", "int4"), "--feature-storage int4"),
    ],
)
def test_cli_features_bad_options(synthetic_dir, tmp_path, cli, args, message):
    code, out, err = cli(
        "data", "features", synthetic_dir, "--cache", tmp_path, "--split", "val", *args
    )
    assert code == 2 and message in err
    assert not [p for p in tmp_path.iterdir()]  # nothing half-written


def test_image_weights_file_is_loaded_and_fingerprinted(synthetic_dir, tmp_path, cli):
    import torchvision

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    code, _, err = cli(
        "data",
        "features",
        synthetic_dir,
        "--cache",
        tmp_path / "c",
        "--split",
        "val",
        "--image-size",
        "256x128",
        "--image-weights",
        bad,
    )
    assert code == 2 and "not a readable PyTorch checkpoint" in err
    torch.manual_seed(1)
    good = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), good)
    code, out, err = cli(
        "data",
        "features",
        synthetic_dir,
        "--cache",
        tmp_path / "c",
        "--split",
        "val",
        "--image-size",
        "256x128",
        "--image-weights",
        good,
    )
    assert code == 0, err
    assert "random initialisation" not in err
    manifest = json.loads(next((tmp_path / "c").glob("val-objects-*/manifest.json")).read_text())
    assert manifest["weights"] == str(good)


def test_prepare_builtin_generates_checks_and_extracts(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("vcrnet.data.synth.DEFAULT_SIZES", {"train": 6, "val": 3, "test": 3})
    code, out, err = cli("data", "prepare")
    assert code == 0, err
    assert "train: 6 items" in out and "test features (extracted)" in out
    assert len(read_lines(tmp_path / "home/data/synthetic-seed0/train.jsonl")) == 6
    code, out, _ = cli("data", "prepare")
    assert code == 0 and "test features (cached)" in out


def test_int8_storage_halves_the_bytes_and_reads_within_a_few_percent(
    synthetic_dir, synthetic_features, tmp_path
):
    from dataclasses import replace

    found = extract_splits(
        synthetic_dir,
        ("train",),
        tmp_path,
        replace(SMALL_SETTINGS, storage="int8"),
        progress=False,
        shard_items=10,
        shard_images=3,
    )["train"]
    full, small = CachedVCRDataset(synthetic_features), CachedVCRDataset(found)
    for name in ("text", "objects"):
        exact = np.asarray(full.arrays[name][:], dtype=np.float32)
        read = small.arrays[name][:]
        assert read.dtype == np.float16 and read.shape == exact.shape
        error = np.linalg.norm(read.astype(np.float32) - exact, axis=1) / np.maximum(
            np.linalg.norm(exact, axis=1), 1e-6
        )
        assert error.mean() < 0.03 and error.max() < 0.1, (name, error.mean(), error.max())
    size = {
        e: sum(p.stat().st_size for p in e.iterdir()) for e in (synthetic_features.text, found.text)
    }
    assert size[found.text] < 0.55 * size[synthetic_features.text]
    item = small[3]  # the plain item path reads it too
    assert item["question"][0][0].dtype == np.float16
