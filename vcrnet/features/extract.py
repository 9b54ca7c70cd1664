"""Extract a split's features once into the cache: text and objects, each its own entry.

Text entry ``<split>-text-<fp>/`` (T = all word rows of the split, D = encoder width)::

    features.npy  [T, D] float16   one vector per VCR word, no padding
    tags.npy      [T] int16        the object each word is grounded to (0 = the whole image)
    index.npy     [N, 20, 3] int64 per item and pair: (first row, context words, choice words);
                                   pairs 0..3: question + answer i; pair 4 + 4a + r: question and
                                   answer a as context, rationale r as choice
    labels.npy    [N, 2] int64     answer and rationale labels, -1 on test
    items.json                     annot_ids, in file order

Objects entry ``<split>-objects-<fp>/`` (M = object rows, shared by the questions of an image)::

    features.npy  [M, 2048] float16  RoI features; the whole image is one row per image
    boxes.npy     [M, 4] float32     on the canvas, x1 y1 x2 y2
    classes.npy   [M] int16          class ids (``vcrnet.data.grounding.COCO_CLASSES``)
    offsets.npy   [N + 1] int64      item i's rows are rows[offsets[i]:offsets[i + 1]],
    rows.npy      [sum] int64        object 0 (the image) first, then the kept detections
    items.json

Only what the model needs is stored: float16, no padding, only the detections some question
mentions, and each object once per image however many questions ask about it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vcrnet.data.grounding import (
    CLASS_INDEX,
    MASK_SIZE,
    GroundedItem,
    fit_image,
    ground_item,
    make_mask,
    scale_boxes,
)
from vcrnet.data.records import (
    IMAGES_DIR,
    NUM_CHOICES,
    ImageMetadata,
    VCRItem,
    image_path,
    load_metadata,
    read_split,
    split_path,
)
from vcrnet.errors import InputError
from vcrnet.features import cache
from vcrnet.features.image import (
    OBJECT_DIM,
    ObjectFeatureExtractor,
    find_image_weights,
    load_canvas,
)
from vcrnet.features.settings import FeatureSettings
from vcrnet.features.text import TextEncoder, resolve_text_encoder

PAIRS_PER_ITEM = NUM_CHOICES + NUM_CHOICES * NUM_CHOICES  # 4 answer pairs + 16 rationale pairs


@dataclass(frozen=True)
class SplitFeatures:
    """The two cache entries of one split."""

    text: Path
    objects: Path
    computed: list[str] = field(default_factory=list)  # which entries this call extracted


def entry_paths(data_root: str | Path, split: str, cache_root: str | Path,
                settings: FeatureSettings) -> tuple[Path, Path]:
    """Where the split's (text, objects) entries for ``settings`` are, extracted or not."""
    digest = cache.file_digest(split_path(Path(data_root).absolute(), split))
    return (cache.entry_dir(cache_root, split, "text", _text_key(digest, split, settings)),
            cache.entry_dir(cache_root, split, "objects", _object_key(digest, split, settings)))


def extract_split(data_root: str | Path, split: str, cache_root: str | Path,
                  settings: FeatureSettings = FeatureSettings(),
                  progress: bool = True) -> SplitFeatures:
    """The split's cache entries, extracting whichever is missing."""
    data_root = Path(data_root).absolute()
    text_entry, object_entry = entry_paths(data_root, split, cache_root, settings)
    computed = []
    items: list[VCRItem] | None = None
    if not cache.is_complete(text_entry) or not cache.is_complete(object_entry):
        items = read_split(data_root, split)
        grounded = [ground_item(item) for item in items]
    if not cache.is_complete(text_entry):
        _build_text(text_entry, items, grounded, settings, progress)
        computed.append("text")
    if not cache.is_complete(object_entry):
        _build_objects(object_entry, data_root, items, grounded, settings, progress)
        computed.append("objects")
    return SplitFeatures(text_entry, object_entry, computed)


def cached_settings(data_root: str | Path, splits: tuple[str, ...],
                    cache_root: str | Path) -> list[FeatureSettings]:
    """Every ``FeatureSettings`` whose entries for all ``splits`` of this data are complete in
    the cache. Text and object entries are keyed apart (one text entry serves every canvas), so
    the candidates are each cached text setting with each cached image setting."""
    cache_root = Path(cache_root).absolute()
    first = splits[0]
    text_parts, image_parts = {}, {}
    for kind, parts in (("text", text_parts), ("objects", image_parts)):
        for entry in sorted(cache_root.glob(f"{first}-{kind}-*")):
            if not cache.is_complete(entry):
                continue
            stored = cache.read_manifest(entry).get("settings")
            try:
                settings = FeatureSettings.from_dict(stored or {}, where=str(entry))
                paths = entry_paths(data_root, first, cache_root, settings)
            except (InputError, TypeError, ValueError):  # an older or foreign entry: skip it
                continue
            if paths[0 if kind == "text" else 1] == entry:
                parts[entry] = settings
    found = []
    for text in text_parts.values():
        for image in image_parts.values():
            settings = dataclasses.replace(
                text, image_weights=image.image_weights, image_size=image.image_size,
                image_seed=image.image_seed)
            if settings not in found and all(
                    all(cache.is_complete(p) for p in entry_paths(data_root, s, cache_root,
                                                                  settings)) for s in splits):
                found.append(settings)
    return found


def _text_key(digest: str, split: str, s: FeatureSettings) -> dict:
    return {"kind": "text", "split": split, "split_sha256": digest,
            "encoder": _encoder_identity(s.text_encoder), "layer": s.text_layer,
            "max_wordpieces": s.max_wordpieces}


def _object_key(digest: str, split: str, s: FeatureSettings) -> dict:
    weights = find_image_weights(s.image_weights)
    return {"kind": "objects", "split": split, "split_sha256": digest,
            "weights": cache.file_digest(weights) if weights else f"random-{s.image_seed}",
            "image_size": list(s.image_size), "mask_size": MASK_SIZE}


def _encoder_identity(name: str) -> dict:
    """The encoder's name, and for a local folder the names and sizes of its files."""
    path = Path(resolve_text_encoder(name))
    if not path.is_dir():
        return {"name": name}
    files = {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}
    return {"name": name, "files": files}


# --- text ---------------------------------------------------------------------------------------

def item_pairs(g: GroundedItem) -> list[tuple[list[str], list[str], list[int], list[int]]]:
    """The 20 (context words, choice words, context tags, choice tags) of one item."""
    q = g.question
    pairs = [(q.words, a.words, q.tags, a.tags) for a in g.answers]
    for a in g.answers:
        for r in g.rationales:
            pairs.append((q.words + a.words, r.words, q.tags + a.tags, r.tags))
    return pairs


def _build_text(entry: Path, items: list[VCRItem], grounded: list[GroundedItem],
                settings: FeatureSettings, progress: bool) -> None:
    encoder = TextEncoder(settings.text_encoder, settings.text_layer, settings.max_wordpieces)
    all_pairs = [item_pairs(g) for g in grounded]
    index = np.zeros((len(items), PAIRS_PER_ITEM, 3), dtype=np.int64)
    row = 0
    for i, pairs in enumerate(all_pairs):
        for k, (ctx, choice, _, _) in enumerate(pairs):
            index[i, k] = (row, len(ctx), len(choice))
            row += len(ctx) + len(choice)
    manifest = {"kind": "text", "items": len(items), "rows": row, "dim": encoder.dim,
                "settings": settings.to_dict()}
    with cache.building(entry, manifest) as tmp:
        features = cache.new_array(tmp, "features", (row, encoder.dim), "float16")
        tags = cache.new_array(tmp, "tags", (row,), "int16")
        chunk = 32
        for start in _progress(range(0, len(items), chunk), progress, "text features",
                               total=len(items), step=chunk):
            pairs = [p for ps in all_pairs[start:start + chunk] for p in ps]
            encoded = encoder.encode([(p[0], p[1]) for p in pairs])
            for n, (pair, enc) in enumerate(zip(pairs, encoded)):
                first = index[start + n // PAIRS_PER_ITEM, n % PAIRS_PER_ITEM, 0]
                rows = slice(first, first + len(pair[0]) + len(pair[1]))
                features[rows] = np.concatenate([enc.context, enc.choice]).astype(np.float16)
                tags[rows] = pair[2] + pair[3]
        features.flush()
        tags.flush()
        del features, tags
        np.save(tmp / "index.npy", index)
        _save_items(tmp, items)


# --- objects ------------------------------------------------------------------------------------

def _build_objects(entry: Path, data_root: Path, items: list[VCRItem],
                   grounded: list[GroundedItem], settings: FeatureSettings,
                   progress: bool) -> None:
    images: dict[str, dict] = {}  # img_fn -> {"meta", "needed", "item"}
    for item, g in zip(items, grounded):
        image = images.get(item.img_fn)
        if image is None:
            image_path(data_root, item)
            image = images[item.img_fn] = {"meta": load_metadata(data_root, item),
                                           "needed": set(), "item": item}
        elif image["meta"].names != item.objects:
            load_metadata(data_root, item)  # raises, naming this line
        image["needed"].update(g.kept)
    first_row, row = {}, 0
    for img_fn, image in images.items():
        image["needed"] = sorted(image["needed"])
        first_row[img_fn] = row
        row += 1 + len(image["needed"])
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    item_rows = []
    for i, (item, g) in enumerate(zip(items, grounded)):
        base, needed = first_row[item.img_fn], images[item.img_fn]["needed"]
        item_rows += [base] + [base + 1 + needed.index(k) for k in g.kept]
        offsets[i + 1] = len(item_rows)

    weights = find_image_weights(settings.image_weights)
    extractor = ObjectFeatureExtractor(weights, seed=settings.image_seed)
    manifest = {"kind": "objects", "items": len(items), "rows": row, "images": len(images),
                "weights": str(weights) if weights else None, "settings": settings.to_dict()}
    with cache.building(entry, manifest) as tmp:
        features = cache.new_array(tmp, "features", (row, OBJECT_DIM), "float16")
        boxes = cache.new_array(tmp, "boxes", (row, 4), "float32")
        classes = cache.new_array(tmp, "classes", (row,), "int16")
        batch = 4
        todo = list(images.items())
        for start in _progress(range(0, len(todo), batch), progress, "object features",
                               total=len(todo), step=batch):
            _extract_images(extractor, data_root, todo[start:start + batch], first_row,
                            settings.image_size, features, boxes, classes)
        for array in (features, boxes, classes):
            array.flush()
        del features, boxes, classes
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "rows.npy", np.asarray(item_rows, dtype=np.int64))
        _save_items(tmp, items)


def _extract_images(extractor: ObjectFeatureExtractor, data_root: Path,
                    batch: list[tuple[str, dict]], first_row: dict[str, int],
                    canvas: tuple[int, int], features: np.ndarray, boxes: np.ndarray,
                    classes: np.ndarray) -> None:
    canvases, rois, masks, targets = [], [], [], []
    for b, (img_fn, image) in enumerate(batch):
        meta: ImageMetadata = image["meta"]
        fit = fit_image(meta.width, meta.height, canvas)
        canvases.append(load_canvas(image_path(data_root, image["item"]), fit,
                                    (meta.width, meta.height),
                                    str(data_root / IMAGES_DIR / image["item"].metadata_fn)))
        needed = image["needed"]
        orig = np.vstack([[0, 0, meta.width, meta.height], meta.boxes[needed]])
        on_canvas = np.vstack([fit.window, scale_boxes(meta.boxes[needed], fit)])
        obj_masks = [np.ones((MASK_SIZE, MASK_SIZE), np.float32)]
        obj_masks += [make_mask(orig[1 + j], meta.segms[k]) for j, k in enumerate(needed)]
        rows = np.arange(first_row[img_fn], first_row[img_fn] + len(on_canvas))
        boxes[rows] = on_canvas
        classes[rows] = [CLASS_INDEX["__background__"]] + [CLASS_INDEX[meta.names[k]]
                                                           for k in needed]
        rois.append(np.hstack([np.full((len(on_canvas), 1), b), on_canvas]))
        masks += obj_masks
        targets.append(rows)
    with torch.inference_mode():
        out = extractor(torch.stack(canvases), torch.from_numpy(np.vstack(rois)).float(),
                        torch.from_numpy(np.stack(masks)))
    features[np.concatenate(targets)] = out.numpy().astype(np.float16)


def _save_items(folder: Path, items: list[VCRItem]) -> None:
    labels = np.array([[-1 if it.answer_label is None else it.answer_label,
                        -1 if it.rationale_label is None else it.rationale_label]
                       for it in items], dtype=np.int64).reshape(len(items), 2)
    np.save(folder / "labels.npy", labels)
    (folder / "items.json").write_text(json.dumps([it.annot_id for it in items]))


def _progress(steps: Iterable[int], enabled: bool, what: str, total: int, step: int):
    if not enabled:
        yield from steps
        return
    with tqdm(total=total, desc=what, unit="item" if "text" in what else "image",
              file=sys.stderr, dynamic_ncols=True) as bar:
        for start in steps:
            yield start
            bar.update(min(step, total - start))
