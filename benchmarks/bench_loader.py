"""Items served per second: from the feature cache, against the per-item R2C way.

The R2C way decodes the item's JPEG, runs the ResNet-50 over it and encodes its 20 text pairs for
every item it serves (its loader took ~90% of its 10-hour epochs). The cached way reads
memory-mapped arrays and pads them. Both produce the same batch; the ratio is what caching buys.

    .venv/bin/python benchmarks/bench_loader.py            # the built-in synthetic data
    .venv/bin/python benchmarks/bench_loader.py --data ~/vcr1 --image-size 768x384
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from study import inputs
from vcrnet.data import fit_image, ground_item, image_path, load_metadata, make_mask, read_split
from vcrnet.data.grounding import scale_boxes
from vcrnet.features import CachedVCRDataset, FeatureChoice, FeatureSettings, collate
from vcrnet.features.extract import item_pairs
from vcrnet.features.image import ObjectFeatureExtractor, find_image_weights, load_canvas
from vcrnet.features.text import TextEncoder


def cached_rate(dataset: CachedVCRDataset, batch_size: int, passes: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    for _ in loader:  # one pass to warm the page cache, as every epoch after the first is
        pass
    start, served = time.perf_counter(), 0
    for _ in range(passes):
        for batch in loader:
            served += len(batch["index"])
    return served / (time.perf_counter() - start)


def per_item_rate(data: Path, split: str, settings: FeatureSettings, count: int) -> float:
    """Serve ``count`` items the R2C way: decode, ResNet-50 and text encoder per item."""
    items = read_split(data, split)[:count]
    text = TextEncoder(settings.text_encoder, settings.text_layer, settings.max_wordpieces)
    vision = ObjectFeatureExtractor(
        find_image_weights(settings.image_weights), seed=settings.image_seed
    )
    start = time.perf_counter()
    for item in items:
        g = ground_item(item)
        meta = load_metadata(data, item)
        fit = fit_image(meta.width, meta.height, settings.image_size)
        canvas = load_canvas(image_path(data, item), fit, (meta.width, meta.height), "metadata")
        boxes = np.vstack([fit.window, scale_boxes(meta.boxes[g.kept], fit)])
        masks = [np.ones((14, 14), np.float32)] + [
            make_mask(meta.boxes[k], meta.segms[k]) for k in g.kept
        ]
        rois = torch.from_numpy(np.hstack([np.zeros((len(boxes), 1)), boxes])).float()
        with torch.inference_mode():
            objects = vision(canvas[None], rois, torch.from_numpy(np.stack(masks)))
        encoded = text.encode([(p[0], p[1]) for p in item_pairs(g)])
        assert objects.shape[0] == len(boxes) and len(encoded) == 20
    return len(items) / (time.perf_counter() - start)


def entry_bytes(entry: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_size for p in sorted(entry.glob("*.npy"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a VCR directory [default: the built-in one]")
    parser.add_argument("--cache", type=Path, help="feature cache [default: the built-in one]")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", default=None, help="WxH [default: 384x192 built-in]")
    parser.add_argument("--per-item", type=int, default=40, help="items served the R2C way")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the cache")
    args = parser.parse_args()
    torch.manual_seed(0)

    size = (
        FeatureSettings.from_dict({"image_size": args.image_size}).image_size
        if args.image_size
        else None
    )
    found = inputs.resolve(args.data, args.cache, FeatureChoice(image_size=size), (args.split,))
    data, settings, entries = found.data, found.settings, found.splits[args.split]
    dataset = CachedVCRDataset(entries)

    cached = cached_rate(dataset, args.batch_size, args.passes)
    per_item = per_item_rate(data, args.split, settings, args.per_item)
    text_bytes, object_bytes = entry_bytes(entries.text), entry_bytes(entries.objects)
    n = len(dataset)
    report = {
        "split": args.split,
        "items": n,
        "torch_threads": torch.get_num_threads(),
        "canvas": list(settings.image_size),
        "text_dim": dataset.text_dim,
        "cached_items_per_s": round(cached, 1),
        "per_item_items_per_s": round(per_item, 2),
        "ratio": round(cached / per_item, 1),
        "bytes_per_item": round((sum(text_bytes.values()) + sum(object_bytes.values())) / n),
        "text_bytes_per_item": {k: round(v / n) for k, v in text_bytes.items()},
        "object_bytes_per_item": {k: round(v / n) for k, v in object_bytes.items()},
        "text_rows_per_item": round(len(np.load(entries.text / "tags.npy", mmap_mode="r")) / n, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
