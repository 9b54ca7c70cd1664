"""Training speed at VCR's shape, end to end: the real training path, the model alone on the same
batches, and the input path alone (today's and the collate one), in one run.

It first writes a feature cache in the project's own format (``vcrnet.features.extract``'s
layout) shaped like VCR: per question 4 answers and 4 rationales whose word counts are drawn
around VCR 1.0's means (question 6.6, answer 7.5, rationale 16.2 words; Poisson around them), 3 to
9 detections per image and 3 questions per image, or, with ``--lengths-from DIR``, drawn from a
VCR folder's own split (its words and its relevant detections, as extraction would keep them).
The features are random float16 (their values do not change the speed). Then, on ``--device``:

- ``train``: items/s of ``vcrnet.train.train_epoch`` over ``--batches`` batches (the real path:
  packed gather in a background thread, copies, padding on the device, the training step);
- ``model``: the same batches, padded on the device beforehand; forward, backward, clip, Adam;
- ``input``: the input path alone (gather, copy, pad; no model), and the ``collate`` path
  (``DataLoader`` + ``collate`` + copy, ``--workers`` processes) on the same batches.

Prints JSON, and writes it to ``--out`` or ``$OUT/vcr_speed.json``.

    # this machine (2 CPUs): the input paths at VCR's shape (BERT-base width)
    .venv/bin/python -m benchmarks.vcr_speed --device cpu --questions 1200 --batches 10 \\
        --methods none
    # a GPU node, the whole check (no Ray needed): benchmarks/gpu_check.sh
    python benchmarks/vcr_speed.py --device cuda --questions 20000 --batches 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vcrnet.config import TrainConfig  # noqa: E402
from vcrnet.data.records import NUM_CHOICES  # noqa: E402
from vcrnet.features import CachedVCRDataset, SplitFeatures, cache, collate  # noqa: E402
from vcrnet.features.batches import (  # noqa: E402
    Batches,
    epoch_order,
    gather,
    item_sizes,
    padded_text_rows,
)
from vcrnet.features.extract import PAIRS_PER_ITEM  # noqa: E402
from vcrnet.train import (  # noqa: E402
    build,
    epoch_batches,
    make_optimizer,
    math_mode,
    train_epoch,
    train_step,
)

VCR_TRAIN_QUESTIONS = 212_923
VCR_MEAN_WORDS = {"question": 6.6, "answer": 7.5, "rationale": 16.2}  # VCR 1.0 train
QUESTIONS_PER_IMAGE = 3
OBJECT_DIM = 2048


def vcr_lengths(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Word counts and detections per question, drawn around VCR's means."""

    def words(mean: float, *shape: int) -> np.ndarray:
        return 1 + rng.poisson(mean - 1, size=shape)

    images = -(-n // QUESTIONS_PER_IMAGE)
    return {
        "question": words(VCR_MEAN_WORDS["question"], n),
        "answer": words(VCR_MEAN_WORDS["answer"], n, NUM_CHOICES),
        "rationale": words(VCR_MEAN_WORDS["rationale"], n, NUM_CHOICES),
        "objects": np.repeat(rng.integers(3, 10, size=images), QUESTIONS_PER_IMAGE)[:n],
    }


def folder_lengths(
    data: Path, split: str, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Word counts and relevant detections of ``n`` questions drawn from a VCR folder's split."""
    from vcrnet.data import ground_item, read_split

    grounded = [ground_item(item) for item in read_split(data, split)]
    pick = rng.integers(0, len(grounded), size=n)
    return {
        "question": np.array([len(grounded[i].question.words) for i in pick]),
        "answer": np.array([[len(a.words) for a in grounded[i].answers] for i in pick]),
        "rationale": np.array([[len(r.words) for r in grounded[i].rationales] for i in pick]),
        "objects": np.array([len(grounded[i].kept) for i in pick]),
    }


def write_cache(
    root: Path,
    lengths: dict[str, np.ndarray],
    dim: int,
    rng: np.random.Generator,
    storage: str = "float16",
) -> SplitFeatures:
    """The two cache entries of a split with these lengths, in the extraction's layout (one
    shard; ``storage`` int8: codes and a scale per row, ``cache.quantize``)."""
    q, a, r = lengths["question"], lengths["answer"], lengths["rationale"]
    n_obj = lengths["objects"]
    n = len(q)
    ctx = np.concatenate(
        [
            np.repeat(q[:, None], NUM_CHOICES, 1),  # question beside answer i
            np.repeat(q[:, None] + a, NUM_CHOICES, 1),
        ],
        1,
    )  # q + answer a, per r
    choice = np.concatenate([a, np.tile(r, NUM_CHOICES)], 1)  # [N, 20]
    pair_rows = (ctx + choice).ravel()
    index = np.stack(
        [(np.cumsum(pair_rows) - pair_rows).reshape(n, PAIRS_PER_ITEM), ctx, choice], -1
    )
    ids = [f"bench-{i}" for i in range(n)]
    settings = {
        "bench": True,
        "n": n,
        "dim": dim,
        "seed": int(rng.integers(1 << 30)),
        "storage": storage,
    }
    stored = {"shards": 1, "storage": storage}
    text = cache.entry_dir(root, "train", "text", settings)
    objects = cache.entry_dir(root, "train", "objects", settings)
    if cache.is_complete(text) and cache.is_complete(objects):  # made by an earlier run
        return SplitFeatures(text, objects)
    with cache.building(text, {"dim": dim, "items": n, **stored}) as tmp:
        rows = int(pair_rows.sum())
        block = rng.standard_normal((4096, dim)).astype(np.float16)
        for name, part in _stored(block, storage).items():
            features = cache.new_array(tmp, name, (rows, *part.shape[1:]), str(part.dtype))
            for s in range(0, rows, len(part)):  # a repeated random block: fast to write
                features[s : s + len(part)] = part[: rows - s]
        tags = cache.new_array(tmp, "tags", (rows,), "int16")
        tags[:] = np.where(rng.random(rows) < 0.2, rng.integers(1, 4, size=rows), 0)
        np.save(tmp / "index.npy", index.astype(np.int64))
        np.save(tmp / "labels.npy", rng.integers(0, NUM_CHOICES, size=(n, 2)))
        (tmp / "items.json").write_text(json.dumps(ids))
        del features, tags
    with cache.building(objects, {"items": n, **stored}) as tmp:
        counts = 1 + n_obj  # the whole image first
        first_of_image = np.cumsum(counts) - counts  # an image's rows, shared by its questions
        image = np.arange(n) // QUESTIONS_PER_IMAGE
        first_question = image * QUESTIONS_PER_IMAGE
        offsets = np.concatenate([[0], np.cumsum(counts)])
        rows = np.concatenate(
            [first_of_image[first_question[i]] + np.arange(counts[i]) for i in range(n)]
        )
        total = int(counts.sum())
        for name, part in _stored(
            rng.random((total, OBJECT_DIM), dtype=np.float32).astype(np.float16), storage
        ).items():
            np.save(tmp / f"{name}.npy", part)
        np.save(tmp / "boxes.npy", rng.random((total, 4), dtype=np.float32) * 384)
        np.save(tmp / "classes.npy", rng.integers(1, 81, size=total).astype(np.int16))
        np.save(tmp / "offsets.npy", offsets.astype(np.int64))
        np.save(tmp / "rows.npy", rows.astype(np.int64))
        (tmp / "items.json").write_text(json.dumps(ids))
    return SplitFeatures(text, objects)


def _stored(rows: np.ndarray, storage: str) -> dict[str, np.ndarray]:
    """The files of float16 ``rows`` as one shard of ``storage``."""
    if storage == "float16":
        return {cache.shard_name("features", 0): rows}
    codes, scales = cache.quantize(rows)
    return {cache.shard_name("features", 0): codes, cache.shard_name(cache.SCALES, 0): scales}


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def input_rate(batches, device: torch.device | None) -> float:
    """Items/s of iterating ``batches``, each moved to ``device`` (None: left where it is), after
    one warm-up batch."""
    it = iter(batches)
    next(it)
    synchronize(device)
    start, items = time.perf_counter(), 0
    for batch in it:
        if device is not None:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        items += len(batch["index"])
    synchronize(device)
    return items / (time.perf_counter() - start)


def input_rates(
    dataset: CachedVCRDataset,
    order: list[np.ndarray],
    device: torch.device,
    workers: list[int],
    passes: int = 3,
) -> dict[str, float]:
    """Items/s of each input path on ``order``'s batches, the median of ``passes`` passes (taken
    in turn: this machine's speed drifts): ``packed`` (``Batches``: gather, copy, pad on
    ``device``), ``packed_host`` (its host side alone, what a GPU trial's CPU does) and
    ``collate_<n>_workers`` (``DataLoader`` + ``collate`` + copy, as training was before)."""
    pin = device.type == "cuda"
    paths = {
        "packed": (lambda: Batches(dataset, order, device), device),
        "packed_host": (lambda: (gather(dataset, b, pin) for b in order), None),
        **{
            f"collate_{w}_workers": (lambda w=w: collate_loader(dataset, order, w, device), device)
            for w in workers
        },
    }
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(passes):
        for name, (make, to) in paths.items():
            rates[name].append(input_rate(make(), to))
    return {name: round(float(np.median(r)), 1) for name, r in rates.items()}


def collate_loader(
    dataset: CachedVCRDataset, order: list[np.ndarray], workers: int, device: torch.device
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=[b.tolist() for b in order],
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )


def model_rate(
    config: TrainConfig,
    dataset: CachedVCRDataset,
    order: list[np.ndarray],
    device: torch.device,
    warmup: int = 2,
) -> float:
    """Items/s of the training step alone on ``order``'s batches, padded on the device first."""
    batches = list(Batches(dataset, order, device))
    model, coupling, optimizer = trainer(config, dataset.text_dim, device)
    model.train()
    for batch in batches[:warmup]:
        train_step(model, coupling, batch, optimizer, config)
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        train_step(model, coupling, batch, optimizer, config)
    synchronize(device)
    return sum(len(b["index"]) for b in batches) / (time.perf_counter() - start)


def trainer(config: TrainConfig, text_dim: int, device: torch.device):
    model, coupling = build(config, text_dim)
    model.to(device)
    return model, coupling, make_optimizer(model, config)


def train_rate(config: TrainConfig, dataset: CachedVCRDataset, device: torch.device) -> float:
    """Items/s of ``train_epoch`` over ``dataset`` (epoch 1), after a warm-up epoch 0 over its
    first few batches."""
    model, coupling, optimizer = trainer(config, dataset.text_dim, device)
    warmup = dataset.subset(np.arange(min(len(dataset), 2 * config.batch_size)))
    train_epoch(model, coupling, warmup, optimizer, config, 0)
    synchronize(device)
    start = time.perf_counter()
    train_epoch(model, coupling, dataset, optimizer, config, 1)
    synchronize(device)
    return len(dataset) / (time.perf_counter() - start)


def same_as_collate(
    dataset: CachedVCRDataset, order: list[np.ndarray], device: torch.device
) -> bool:
    """Whether ``Batches`` on ``device`` makes ``collate``'s batches, bit for bit, on
    ``order``'s batches (the correctness check of the path being timed)."""
    for batch, positions in zip(Batches(dataset, order, device), order):
        expected = collate([dataset[int(i)] for i in positions])
        if set(batch) != set(expected) or not all(
            batch[k].dtype == v.dtype and torch.equal(batch[k].cpu(), v)
            for k, v in expected.items()
        ):
            return False
    return True


def padded_rows(dataset: CachedVCRDataset, order: list[np.ndarray]) -> float:
    """Text rows per item once padded (the model's inputs), over ``order``'s batches."""
    index = dataset.arrays["index"]
    rows = sum(
        len(b) * padded_text_rows(np.asarray(index[dataset.items[b]]), axis=None) for b in order
    )
    return float(rows) / sum(len(b) for b in order)


def measure(args: argparse.Namespace, dataset: CachedVCRDataset) -> dict:
    device = torch.device(args.device)
    n = min(len(dataset), args.batches * args.batch_size)
    subset = dataset.subset(np.arange(n))
    config = TrainConfig(
        preset=args.preset,
        batch_size=args.batch_size,
        bucket_batches=args.bucket_batches,
        num_samples=64,
    )
    order = epoch_batches(subset, config, 1)  # what train_epoch(epoch=1) serves
    shuffled = epoch_order(item_sizes(subset), args.batch_size, 0, bucket_batches=0)
    a = dataset.arrays
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "preset": args.preset,
        "batch_size": args.batch_size,
        "items": n,
        "text_dim": dataset.text_dim,
        "bucket_batches": args.bucket_batches,
        "text_rows_per_item": round(len(a["text"]) / len(dataset), 1),
        "objects_per_item": round(float(np.diff(a["offsets"]).mean()), 2),
        "padded_text_rows_per_item": {
            "bucketed": round(padded_rows(subset, order), 1),
            "shuffled": round(padded_rows(subset, shuffled), 1),
        },
        "packed_equals_collate": same_as_collate(subset, order[:3], device),
        "input_items_per_s": input_rates(subset, order, device, args.workers),
        "methods": {},
    }
    rates = report["input_items_per_s"]
    report["input_speedup_vs_collate"] = {
        name: round(rates[name] / rates["collate_0_workers"], 2)
        for name in ("packed", "packed_host")
        if "collate_0_workers" in rates
    }
    print(json.dumps(report), flush=True)
    for method in args.methods:
        config = config.replace(method=method)
        model = model_rate(config, subset, order, device)
        if device.type == "cuda":  # the training path's own peak, not the model's batch list
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        train = train_rate(config, subset, device)
        result = {
            "train_items_per_s": round(train, 1),
            "model_items_per_s": round(model, 1),
            "train_over_model": round(train / model, 3),
            "vcr_epoch_minutes": round(VCR_TRAIN_QUESTIONS / train / 60, 2),
        }
        if device.type == "cuda":
            result["train_peak_gpu_memory_gib"] = round(
                torch.cuda.max_memory_allocated(device) / 2**30, 2
            )
        if args.compare_shuffle:
            result["model_items_per_s_shuffled"] = round(
                model_rate(config, subset, shuffled, device), 1
            )
        report["methods"][method] = result
        print(json.dumps({method: result}), flush=True)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--questions", type=int, default=20_000, help="questions in the cache")
    parser.add_argument("--dim", type=int, default=768, help="text width (BERT-base: 768)")
    parser.add_argument(
        "--lengths-from",
        type=Path,
        metavar="DIR",
        help="draw the lengths from this VCR folder's split (--split)",
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--preset", default="r2c")
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--batches", type=int, default=60, help="batches timed per path")
    parser.add_argument("--bucket-batches", type=int, default=50)  # buckets, to compare
    parser.add_argument(
        "--methods",
        default="softmax,teacher",
        help="comma-separated couplings, or 'none' (input paths only)",
    )
    parser.add_argument("--workers", default="0,4", help="collate DataLoader workers to try")
    parser.add_argument(
        "--compare-shuffle",
        action="store_true",
        help="also time the model on plain-shuffled (unbucketed) batches",
    )
    parser.add_argument("--cache", type=Path, help="where to write the cache [a temporary folder]")
    parser.add_argument("--out", type=Path, help="the JSON report [$OUT/vcr_speed.json]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-storage", default="float16", choices=("float16", "int8"))
    args = parser.parse_args(argv)
    args.methods = [] if args.methods == "none" else args.methods.split(",")
    args.workers = [int(w) for w in args.workers.split(",") if w != ""]
    return args


def make_dataset(args: argparse.Namespace, root: Path) -> CachedVCRDataset:
    rng = np.random.default_rng(args.seed)
    lengths = (
        folder_lengths(args.lengths_from, args.split, args.questions, rng)
        if args.lengths_from
        else vcr_lengths(args.questions, rng)
    )
    return CachedVCRDataset(write_cache(root, lengths, args.dim, rng, args.feature_storage))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    math_mode(TrainConfig.tf32)  # training's default GPU math (TF32 off), as fit sets it
    root = args.cache or Path(tempfile.mkdtemp(prefix="vcr-speed-"))
    try:
        report = measure(args, make_dataset(args, root))
    finally:
        if args.cache is None:
            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    out = args.out or (Path(os.environ["OUT"], "vcr_speed.json") if os.environ.get("OUT") else None)
    if out:
        out.write_text(text)
    return report


if __name__ == "__main__":
    main()
