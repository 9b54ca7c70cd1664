"""Extract a split's features once into the cache: text and objects, each its own entry.

Text entry ``<split>-text-<fp>/`` (T = all word rows of the split, D = encoder width)::

    features-NNNNN.npy  [T_k, D] float16  one vector per VCR word, no padding; the rows of
                                          shard k's items (read as one ``[T, D]`` array by
                                          ``cache.open_rows``)
    tags.npy      [T] int16        the object each word is grounded to (0 = the whole image)
    index.npy     [N, 20, 3] int64 per item and pair: (first row, context words, choice words);
                                   pairs 0..3: question + answer i; pair 4 + 4a + r: question and
                                   answer a as context, rationale r as choice
    labels.npy    [N, 2] int64     answer and rationale labels, -1 on test
    items.json                     annot_ids, in file order
    movies.json                    each item's movie (``VCRItem.movie``), in file order

Objects entry ``<split>-objects-<fp>/`` (M = object rows, shared by the questions of an image)::

    features-NNNNN.npy  [M_k, 2048] float16  RoI features of shard k's images; the whole image is
                                             one row per image
    boxes.npy     [M, 4] float32     on the canvas, x1 y1 x2 y2
    classes.npy   [M] int16          class ids (``vcrnet.data.grounding.COCO_CLASSES``)
    offsets.npy   [N + 1] int64      item i's rows are rows[offsets[i]:offsets[i + 1]],
    rows.npy      [sum] int64        object 0 (the image) first, then the kept detections
    items.json, movies.json

Only what the model needs is stored: float16, no padding, only the detections some question
mentions, and each object once per image however many questions ask about it.

How an entry is made, the same on one machine and on a Ray cluster's GPU workers
(``study.inputs.extraction``):

1. ``plan_split`` (where the split is read): the row layout and every array but the features,
   written into the entry's partial folder (``cache.partial_dir``), and the entry's shards:
   runs of items (text) or images (objects) with what a worker needs to compute their rows;
2. ``ShardWorker`` (anywhere that sees the data and the cache), shard by shard in any order: the
   encoders loaded once, each shard's feature rows written as one file that appears whole, so an
   interrupted extraction resumes from the shards it finished;
3. ``EntryPlan.finish``, once every shard is there: the manifest, and the entry in place.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import shutil
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vcrnet.atomic import replacing, write_text
from vcrnet.data.grounding import (
    CLASS_INDEX,
    MASK_SIZE,
    GroundedItem,
    ImageFit,
    fit_image,
    ground_item,
    make_mask,
    scale_boxes,
)
from vcrnet.data.records import (
    IMAGES_DIR,
    NUM_CHOICES,
    VCRItem,
    image_path,
    load_metadata,
    read_split,
    require_items,
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
from vcrnet.features.threads import prefetched

PAIRS_PER_ITEM = NUM_CHOICES + NUM_CHOICES * NUM_CHOICES  # 4 answer pairs + 16 rationale pairs
SHARD_ITEMS = 1000  # text: ~0.8 GB a shard at VCR's mean lengths with BERT-base (docs/features.md)
SHARD_IMAGES = 1000  # objects: ~25 MB a shard
FEATURES = "features"


@dataclass(frozen=True)
class SplitFeatures:
    """The two cache entries of one split."""

    text: Path
    objects: Path
    computed: list[str] = field(default_factory=list)  # which entries this call extracted


@dataclass(frozen=True)
class ImageJob:
    """What a worker needs of one image to compute its object rows."""

    path: Path
    metadata_path: str  # for error messages
    size: tuple[int, int]  # (width, height) as the metadata says
    fit: ImageFit
    boxes: np.ndarray  # [1 + n, 4] original pixels, the whole image first (for the masks)
    on_canvas: np.ndarray  # [1 + n, 4] the same on the canvas (the RoIs)
    segms: list[list[np.ndarray]]  # polygons of the n detections


@dataclass(frozen=True)
class Shard:
    """One shard of an entry (picklable: a Ray worker receives it): ``rows`` feature rows of
    ``kind`` made from ``jobs``, written to ``folder/features-<number>.npy``. Text jobs are the
    shard's (context words, choice words) pairs in row order; object jobs, its ``ImageJob``."""

    kind: str  # "text" or "objects"
    folder: Path
    number: int
    rows: int
    jobs: tuple

    @property
    def path(self) -> Path:
        return self.folder / f"{cache.shard_name(FEATURES, self.number)}.npy"

    def done(self) -> bool:
        return self.path.is_file()


@dataclass
class EntryPlan:
    """An entry being made: its shards and what its manifest will say."""

    entry: Path
    shards: list[Shard]
    manifest: dict

    def finish(self, workers: Iterable[str] = ()) -> None:
        """Every shard written: the entry complete, in place. ``workers``: who made them."""
        missing = [s.number for s in self.shards if not s.done()]
        if missing:
            raise RuntimeError(f"{self.entry}: shards {missing} were not written")
        first = cache.open_array(self.shards[0].folder, cache.shard_name(FEATURES, 0))
        cache.finish(
            self.shards[0].folder,
            self.entry,
            {
                **self.manifest,
                "dim": int(first.shape[1]),
                "shards": len(self.shards),
                "extracted_on": sorted(set(workers)),
            },
        )


RunShards = Callable[[list[Shard], FeatureSettings, bool], Iterable[tuple[Shard, str]]]
"""Computes ``shards`` (any order) with ``settings``; yields each shard done with who did it."""


def entry_paths(
    data_root: str | Path, split: str, cache_root: str | Path, settings: FeatureSettings
) -> tuple[Path, Path]:
    """Where the split's (text, objects) entries for ``settings`` are, extracted or not."""
    digest = cache.file_digest(split_path(Path(data_root).absolute(), split))
    return (
        cache.entry_dir(cache_root, split, "text", _text_key(digest, split, settings)),
        cache.entry_dir(cache_root, split, "objects", _object_key(digest, split, settings)),
    )


def extract_split(
    data_root: str | Path,
    split: str,
    cache_root: str | Path,
    settings: FeatureSettings = FeatureSettings(),
    progress: bool = True,
) -> SplitFeatures:
    """The split's cache entries, extracting whichever is missing, in this process."""
    return extract_splits(data_root, (split,), cache_root, settings, progress)[split]


def extract_splits(
    data_root: str | Path,
    splits: tuple[str, ...],
    cache_root: str | Path,
    settings: FeatureSettings = FeatureSettings(),
    progress: bool = True,
    run: RunShards | None = None,
    shard_items: int = SHARD_ITEMS,
    shard_images: int = SHARD_IMAGES,
) -> dict[str, SplitFeatures]:
    """Each split's cache entries; the missing ones planned here, their shards computed by
    ``run`` (default: in this process, ``run_here``), and finished here. The shard sizes apply
    to entries begun now (a resumed one keeps its own). Every split file is checked to hold
    items before any entry is begun."""
    data_root = Path(data_root).absolute()
    for split in splits:
        require_items(split_path(data_root, split))
    plans = {
        split: plan_split(data_root, split, cache_root, settings, shard_items, shard_images)
        for split in splits
    }
    entries = [plan for split_plans in plans.values() for plan in split_plans]
    todo = {
        shard.path: (shard, plan) for plan in entries for shard in plan.shards if not shard.done()
    }
    workers: dict[Path, str] = {}
    pending = {id(plan): sum(1 for s, p in todo.values() if p is plan) for plan in entries}
    for plan in entries:  # each entry finished as soon as its last shard is written
        if not pending[id(plan)]:
            plan.finish(["earlier run"])
    try:
        for shard, worker in (run or run_here)([s for s, _ in todo.values()], settings, progress):
            plan = todo[shard.path][1]
            workers[shard.path] = worker
            pending[id(plan)] -= 1
            if not pending[id(plan)]:
                plan.finish(workers.get(s.path, "earlier run") for s in plan.shards)
    except BaseException:  # keep what can be resumed, nothing else (a bad option: nothing)
        for plan in entries:
            if plan.shards and not any(s.done() for s in plan.shards):
                shutil.rmtree(plan.shards[0].folder, ignore_errors=True)
        raise
    return {
        split: SplitFeatures(
            *entry_paths(data_root, split, cache_root, settings),
            [p.manifest["kind"] for p in plans[split]],
        )
        for split in splits
    }


def run_here(
    shards: list[Shard], settings: FeatureSettings, progress: bool
) -> Iterator[tuple[Shard, str]]:
    """``RunShards`` in this process, one shard after the other (on its GPU if it has one)."""
    cuda = torch.cuda.is_available()
    worker = ShardWorker(
        settings,
        "cuda" if cuda else "cpu",
        image_batch=16 if cuda else 4,
        threads=torch.get_num_threads(),
    )
    for shard in progress_bar(shards, len(shards), progress):
        worker(shard)
        yield shard, socket.gethostname()


def progress_bar(done: Iterable, total: int, enabled: bool) -> Iterable:
    """One bar over shards (on stderr), advanced by each of ``done``."""
    if not enabled or not total:
        return done
    return tqdm(
        done, total=total, desc="feature shards", unit="shard", file=sys.stderr, dynamic_ncols=True
    )


def plan_split(
    data_root: Path,
    split: str,
    cache_root: str | Path,
    settings: FeatureSettings,
    shard_items: int = SHARD_ITEMS,
    shard_images: int = SHARD_IMAGES,
) -> list[EntryPlan]:
    """The split's entries still missing, planned: their partial folders hold every array but
    the features (and the shards already finished by an interrupted extraction)."""
    text_entry, object_entry = entry_paths(data_root, split, cache_root, settings)
    missing = [e for e in (text_entry, object_entry) if not cache.is_complete(e)]
    if not missing:
        return []
    items = read_split(data_root, split)
    grounded = [ground_item(item) for item in items]
    plans = []
    if text_entry in missing:
        plans.append(_plan_text(text_entry, items, grounded, settings, shard_items))
    if object_entry in missing:
        plans.append(
            _plan_objects(object_entry, data_root, items, grounded, settings, shard_images)
        )
    return plans


class ShardWorker:
    """Computes shards with ``settings`` on ``device``; each encoder is loaded once, when a
    shard first needs it. Reading runs beside the encoder: the next batch's wordpieces in a
    thread, its JPEGs decoded by ``threads`` threads."""

    def __init__(
        self, settings: FeatureSettings, device: str = "cpu", image_batch: int = 4, threads: int = 1
    ):
        self.settings, self.device, self.image_batch = settings, device, image_batch
        self.threads = max(1, threads)
        self._text: TextEncoder | None = None
        self._objects: ObjectFeatureExtractor | None = None

    def __call__(self, shard: Shard) -> None:
        if shard.done():  # a retried or repeated shard
            return
        if shard.kind == "text":
            self._text_shard(shard)
        else:
            self._object_shard(shard)

    def _text_shard(self, shard: Shard) -> None:
        if self._text is None:
            s = self.settings
            self._text = TextEncoder(
                s.text_encoder, s.text_layer, s.max_wordpieces, device=self.device
            )
        self._write(
            shard, self._text.dim, lambda out: self._text.encode_into(list(shard.jobs), out)
        )

    def _object_shard(self, shard: Shard) -> None:
        if self._objects is None:
            weights = find_image_weights(self.settings.image_weights)
            self._objects = ObjectFeatureExtractor(weights, seed=self.settings.image_seed)
            self._objects.to(self.device)
        batches = [
            shard.jobs[s : s + self.image_batch]
            for s in range(0, len(shard.jobs), self.image_batch)
        ]

        def fill(out: np.ndarray) -> None:
            with concurrent.futures.ThreadPoolExecutor(self.threads) as decoders:
                row = 0
                for inputs in prefetched(lambda jobs: _image_inputs(jobs, decoders), batches):
                    features = self._run_images(*inputs)
                    out[row : row + len(features)] = features
                    row += len(features)

        self._write(shard, OBJECT_DIM, fill)

    def _write(self, shard: Shard, dim: int, fill: Callable[[np.ndarray], None]) -> None:
        """The shard's rows, ``fill`` writing them in float16, stored as the settings say (in
        int8: the scales first, the features last, so the shard is done only when both are)."""
        name, shape = cache.shard_name(FEATURES, shard.number), (shard.rows, dim)
        if self.settings.storage == "float16":
            with cache.shard_file(shard.folder, name, shape, "float16") as out:
                fill(out)
            return
        rows = np.zeros(shape, dtype=np.float16)
        fill(rows)
        codes, scales = cache.quantize(rows)
        with cache.shard_file(shard.folder, name, shape, "int8") as out:
            with cache.shard_file(
                shard.folder, cache.shard_name(cache.SCALES, shard.number), scales.shape, "float32"
            ) as out_scales:
                out_scales[:] = scales
            out[:] = codes

    @torch.inference_mode()
    def _run_images(
        self, canvases: torch.Tensor, rois: torch.Tensor, masks: torch.Tensor
    ) -> np.ndarray:
        cuda = self.device.startswith("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = self._objects(
                canvases.to(self.device, non_blocking=True),
                rois.to(self.device),
                masks.to(self.device),
            )
        return out.half().cpu().numpy()


def _image_inputs(
    jobs: tuple[ImageJob, ...], decoders: concurrent.futures.Executor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of images read (decoded by ``decoders``): canvases ``[B, 3, H, W]``, RoIs
    ``[R, 5]``, masks ``[R, 14, 14]``."""
    canvases = list(
        decoders.map(lambda job: load_canvas(job.path, job.fit, job.size, job.metadata_path), jobs)
    )
    rois, masks = [], []
    for b, job in enumerate(jobs):
        rois.append(np.hstack([np.full((len(job.on_canvas), 1), b), job.on_canvas]))
        masks.append(np.ones((MASK_SIZE, MASK_SIZE), np.float32))
        masks += [make_mask(box, segms) for box, segms in zip(job.boxes[1:], job.segms)]
    return (
        torch.stack(canvases),
        torch.from_numpy(np.vstack(rois)).float(),
        torch.from_numpy(np.stack(masks)),
    )


def cached_settings(
    data_root: str | Path, splits: tuple[str, ...], cache_root: str | Path
) -> list[FeatureSettings]:
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
                text,
                image_weights=image.image_weights,
                image_size=image.image_size,
                image_seed=image.image_seed,
            )
            if settings not in found and all(
                all(cache.is_complete(p) for p in entry_paths(data_root, s, cache_root, settings))
                for s in splits
            ):
                found.append(settings)
    return found


def _text_key(digest: str, split: str, s: FeatureSettings) -> dict:
    return {
        "kind": "text",
        "split": split,
        "split_sha256": digest,
        "encoder": _encoder_identity(s.text_encoder),
        "layer": s.text_layer,
        "max_wordpieces": s.max_wordpieces,
        "storage": s.storage,
    }


def _object_key(digest: str, split: str, s: FeatureSettings) -> dict:
    weights = find_image_weights(s.image_weights)
    return {
        "kind": "objects",
        "split": split,
        "split_sha256": digest,
        "weights": cache.file_digest(weights) if weights else f"random-{s.image_seed}",
        "image_size": list(s.image_size),
        "mask_size": MASK_SIZE,
        "storage": s.storage,
    }


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


def _plan_text(
    entry: Path,
    items: list[VCRItem],
    grounded: list[GroundedItem],
    settings: FeatureSettings,
    shard_items: int,
) -> EntryPlan:
    folder = _partial_folder(entry)
    shard_items = _recorded(folder, "shard_items", shard_items)
    all_pairs = [item_pairs(g) for g in grounded]
    words = np.array(
        [[(len(p[0]), len(p[1])) for p in pairs] for pairs in all_pairs], dtype=np.int64
    ).reshape(len(items), PAIRS_PER_ITEM, 2)
    pair_rows = words.sum(-1).ravel()
    index = np.concatenate(
        [(np.cumsum(pair_rows) - pair_rows).reshape(-1, PAIRS_PER_ITEM, 1), words], axis=-1
    )
    tags = np.array([t for pairs in all_pairs for p in pairs for t in p[2] + p[3]], dtype=np.int16)
    _save(folder, "index", index)
    _save(folder, "tags", tags)
    _save_items(folder, items)
    item_rows = pair_rows.reshape(len(items), PAIRS_PER_ITEM).sum(1)
    shards = [
        Shard(
            "text",
            folder,
            k,
            int(item_rows[s : s + shard_items].sum()),
            tuple((p[0], p[1]) for pairs in all_pairs[s : s + shard_items] for p in pairs),
        )
        for k, s in enumerate(range(0, len(items), shard_items))
    ]
    manifest = {
        "kind": "text",
        "items": len(items),
        "rows": int(pair_rows.sum()),
        "storage": settings.storage,
        "settings": settings.to_dict(),
    }
    return EntryPlan(entry, shards, manifest)


def _plan_objects(
    entry: Path,
    data_root: Path,
    items: list[VCRItem],
    grounded: list[GroundedItem],
    settings: FeatureSettings,
    shard_images: int,
) -> EntryPlan:
    folder = _partial_folder(entry)
    shard_images = _recorded(folder, "shard_images", shard_images)
    images: dict[str, dict] = {}  # img_fn -> {"meta", "needed", "item"}
    for item, g in zip(items, grounded):
        image = images.get(item.img_fn)
        if image is None:
            image_path(data_root, item)
            image = images[item.img_fn] = {
                "meta": load_metadata(data_root, item),
                "needed": set(),
                "item": item,
            }
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
    jobs = [_image_job(data_root, image, settings.image_size) for image in images.values()]
    _save(folder, "boxes", np.concatenate([j.on_canvas for j in jobs]).astype(np.float32))
    _save(
        folder,
        "classes",
        np.array(
            [
                c
                for image in images.values()
                for c in [CLASS_INDEX["__background__"]]
                + [CLASS_INDEX[image["meta"].names[k]] for k in image["needed"]]
            ],
            dtype=np.int16,
        ),
    )
    _save(folder, "offsets", offsets)
    _save(folder, "rows", np.asarray(item_rows, dtype=np.int64))
    _save_items(folder, items)
    shards = [
        Shard("objects", folder, k, sum(len(j.on_canvas) for j in chunk), tuple(chunk))
        for k, chunk in enumerate(
            jobs[s : s + shard_images] for s in range(0, len(jobs), shard_images)
        )
    ]
    weights = find_image_weights(settings.image_weights)
    manifest = {
        "kind": "objects",
        "items": len(items),
        "rows": row,
        "images": len(images),
        "weights": str(weights) if weights else None,
        "storage": settings.storage,
        "settings": settings.to_dict(),
    }
    return EntryPlan(entry, shards, manifest)


def _image_job(data_root: Path, image: dict, canvas: tuple[int, int]) -> ImageJob:
    meta, needed, item = image["meta"], image["needed"], image["item"]
    fit = fit_image(meta.width, meta.height, canvas)
    return ImageJob(
        path=image_path(data_root, item),
        metadata_path=str(data_root / IMAGES_DIR / item.metadata_fn),
        size=(meta.width, meta.height),
        fit=fit,
        boxes=np.vstack([[0, 0, meta.width, meta.height], meta.boxes[needed]]),
        on_canvas=np.vstack([fit.window, scale_boxes(meta.boxes[needed], fit)]),
        segms=[meta.segms[k] for k in needed],
    )


# --- the partial folder -------------------------------------------------------------------------


def _partial_folder(entry: Path) -> Path:
    folder = cache.partial_dir(entry)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _recorded(folder: Path, key: str, value: int) -> int:
    """The shard size the folder's finished shards were cut with (``value`` if none yet)."""
    path = folder / "shards.json"
    if path.is_file():
        return int(json.loads(path.read_text())[key])
    write_text(path, json.dumps({key: value}))
    return value


def _save(folder: Path, name: str, array: np.ndarray) -> None:
    with replacing(folder / f"{name}.npy") as tmp:
        np.save(tmp, array)


def _save_items(folder: Path, items: list[VCRItem]) -> None:
    labels = np.array(
        [
            [
                -1 if it.answer_label is None else it.answer_label,
                -1 if it.rationale_label is None else it.rationale_label,
            ]
            for it in items
        ],
        dtype=np.int64,
    ).reshape(len(items), 2)
    _save(folder, "labels", labels)
    write_text(folder / "items.json", json.dumps([it.annot_id for it in items]))
    write_text(folder / "movies.json", json.dumps([it.movie for it in items]))
