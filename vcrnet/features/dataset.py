"""A PyTorch Dataset over a split's cached features, and the batch the model reads.

The batch, a dict of tensors (B items; L* the longest sentence of the batch, K the most objects,
M the batch's objects in all; D the text width; float32 features, bool masks, long indexes)::

    question          [B, 4, Lq, D]     the question encoded beside answer i
    question_tags     [B, 4, Lq]        object index per word (0 = whole image, also padding)
    question_mask     [B, 4, Lq]
    question_lengths  [B, 4]            the mask's row sums, kept on the host (CPU) wherever the
                                        rest is: the LSTMs' packing needs them there, and reading
                                        them off a GPU would wait for it
    answers           [B, 4, La, D]     answer i
    answer_tags, answer_mask, answer_lengths
    rationale_query   [B, 4, 4, Lc, D]  question + answer a, encoded beside rationale r
    rationale_query_tags, rationale_query_mask, rationale_query_lengths
    rationales        [B, 4, 4, Lr, D]  rationale r, encoded beside question + answer a
    rationale_tags, rationale_mask, rationale_lengths
    objects           [M, 2048]         the batch's objects, packed: item b's are its rows
                                        object_index[b, :n_b]; object 0 is the whole image
    object_index      [B, K]            row of ``objects`` per object slot (0 on padding)
    object_classes    [B, K]
    object_mask       [B, K]
    boxes             [B, K, 4]         canvas pixels, x1 y1 x2 y2
    answer_label      [B]               -1 on test
    host_answer_label [B]               the same, kept on the host (the teacher baselines draw
                                        their answers there)
    rationale_label   [B]               -1 on test
    index             [B]               the item's position in the split

Two ways make it: ``collate`` pads a list of ``dataset[i]`` items on the host, item by item (the
plain reference); ``vcrnet.features.batches`` gathers packed float16 rows and pads on the device
(the training and evaluation path, the same batch bit for bit).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch.utils.data import Dataset

from vcrnet.data.records import NUM_CHOICES
from vcrnet.errors import InputError
from vcrnet.features import cache
from vcrnet.features.extract import PAIRS_PER_ITEM, SplitFeatures

TEXT_FIELDS = ("question", "answers", "rationale_query", "rationales")
TAG_NAMES = {
    "question": "question",
    "answers": "answer",
    "rationale_query": "rationale_query",
    "rationales": "rationale",
}  # the prefix of each field's _tags, _mask, _lengths
HOST_KEYS = (
    *(f"{prefix}_lengths" for prefix in TAG_NAMES.values()),
    "host_answer_label",
)  # stay on the CPU


class CachedVCRDataset(Dataset):
    """Items served from the memory-mapped cache; ``dataset[i]`` is a dict of numpy arrays.
    ``items``: serve only these positions of the split, in this order (a view, see ``subset``).
    Both entries' files are checked against their manifests first (``cache.open_entry``)."""

    def __init__(self, features: SplitFeatures, items: np.ndarray | None = None):
        self.features = features
        self.text_entry, self.object_entry = features.text, features.objects
        text_manifest = cache.open_entry(self.text_entry)
        cache.open_entry(self.object_entry)
        ids = json.loads((self.text_entry / "items.json").read_text())
        if ids != json.loads((self.object_entry / "items.json").read_text()):
            raise InputError(f"{self.object_entry}: its items differ from {self.text_entry}")
        self.items = np.arange(len(ids)) if items is None else np.asarray(items, dtype=np.int64)
        self.annot_ids: list[str] = [ids[i] for i in self.items]
        self.labels = np.load(self.text_entry / "labels.npy")[self.items]
        self.text_dim = text_manifest["dim"]
        self._arrays: dict[str, np.ndarray] | None = None  # opened lazily, once per process
        self._movies: np.ndarray | None = None  # of the whole split, read when first asked for

    def subset(self, positions: np.ndarray) -> CachedVCRDataset:
        """A view of some of this dataset's items (positions in it)."""
        return type(self)(self.features, self.items[np.asarray(positions, dtype=np.int64)])

    def images(self) -> np.ndarray:
        """``[len]``: an id of each item's image (its whole-image object row, shared by the
        questions about one image)."""
        a = self.arrays
        return np.asarray(a["rows"][a["offsets"][self.items]])

    def movies(self) -> np.ndarray:
        """``[len]``: each item's movie (``VCRItem.movie``, the entry's ``movies.json``)."""
        if self._movies is None:
            self._movies = np.asarray(json.loads((self.text_entry / "movies.json").read_text()))
        return self._movies[self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict:  # DataLoader workers reopen the memory maps themselves
        return {**self.__dict__, "_arrays": None, "_movies": None}

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            t, o = self.text_entry, self.object_entry
            self._arrays = {
                "text": cache.open_rows(t, "features"),
                "tags": cache.open_array(t, "tags"),
                "index": cache.open_array(t, "index"),
                "objects": cache.open_rows(o, "features"),
                "boxes": cache.open_array(o, "boxes"),
                "classes": cache.open_array(o, "classes"),
                "offsets": cache.open_array(o, "offsets"),
                "rows": cache.open_array(o, "rows"),
            }
        return self._arrays

    def __getitem__(self, position: int) -> dict[str, object]:
        a = self.arrays
        i = self.items[position]  # the item's position in the split
        index = a["index"][i]  # [20, 3]: first row, context words, choice words
        contexts, choices = [], []
        for first, n_ctx, n_choice in index.tolist():
            contexts.append((a["text"][first : first + n_ctx], a["tags"][first : first + n_ctx]))
            end = first + n_ctx + n_choice
            choices.append((a["text"][first + n_ctx : end], a["tags"][first + n_ctx : end]))
        rows = a["rows"][a["offsets"][i] : a["offsets"][i + 1]]
        return {
            "question": contexts[:NUM_CHOICES],
            "answers": choices[:NUM_CHOICES],
            "rationale_query": contexts[NUM_CHOICES:PAIRS_PER_ITEM],
            "rationales": choices[NUM_CHOICES:PAIRS_PER_ITEM],
            "objects": a["objects"][rows],
            "boxes": a["boxes"][rows],
            "object_classes": a["classes"][rows],
            "labels": self.labels[position],
            "index": position,
        }


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of ``CachedVCRDataset`` items into the batch documented above, on the host."""
    batch: dict[str, torch.Tensor] = {}
    for name in TEXT_FIELDS:
        feats, tags, mask = _pad_sentences([it[name] for it in items])
        if name.startswith("rationale"):
            feats = feats.unflatten(1, (NUM_CHOICES, NUM_CHOICES))
            tags = tags.unflatten(1, (NUM_CHOICES, NUM_CHOICES))
            mask = mask.unflatten(1, (NUM_CHOICES, NUM_CHOICES))
        prefix = TAG_NAMES[name]
        batch[name] = feats
        batch.update(
            {f"{prefix}_tags": tags, f"{prefix}_mask": mask, f"{prefix}_lengths": mask.sum(-1)}
        )
    counts = [len(it["objects"]) for it in items]
    k = max(counts)
    starts = np.cumsum([0, *counts[:-1]])
    object_index = torch.zeros(len(items), k, dtype=torch.long)
    boxes = torch.zeros(len(items), k, 4)
    classes = torch.zeros(len(items), k, dtype=torch.long)
    object_mask = torch.zeros(len(items), k, dtype=torch.bool)
    for b, (it, n) in enumerate(zip(items, counts)):
        object_index[b, :n] = torch.arange(starts[b], starts[b] + n)
        boxes[b, :n] = torch.from_numpy(np.asarray(it["boxes"], dtype=np.float32))
        classes[b, :n] = torch.from_numpy(np.asarray(it["object_classes"], dtype=np.int64))
        object_mask[b, :n] = True
    objects = torch.from_numpy(
        np.concatenate([np.asarray(it["objects"], dtype=np.float32) for it in items])
    )
    labels = torch.from_numpy(np.stack([it["labels"] for it in items]).astype(np.int64))
    batch.update(
        objects=objects,
        object_index=object_index,
        boxes=boxes,
        object_classes=classes,
        object_mask=object_mask,
        answer_label=labels[:, 0],
        host_answer_label=labels[:, 0].clone(),
        rationale_label=labels[:, 1],
        index=torch.tensor([it["index"] for it in items], dtype=torch.long),
    )
    return batch


def _pad_sentences(
    per_item: list[list[tuple[np.ndarray, np.ndarray]]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B][S] (feats [L, D], tags [L])`` -> feats ``[B, S, L, D]``, tags, mask ``[B, S, L]``."""
    n_items, n_sent = len(per_item), len(per_item[0])
    length = max(len(f) for sentences in per_item for f, _ in sentences)
    dim = per_item[0][0][0].shape[1]
    feats = np.zeros((n_items, n_sent, length, dim), dtype=np.float32)
    tags = np.zeros((n_items, n_sent, length), dtype=np.int64)
    mask = np.zeros((n_items, n_sent, length), dtype=bool)
    for b, sentences in enumerate(per_item):
        for s, (f, t) in enumerate(sentences):
            feats[b, s, : len(f)] = f
            tags[b, s, : len(t)] = t
            mask[b, s, : len(f)] = True
    return torch.from_numpy(feats), torch.from_numpy(tags), torch.from_numpy(mask)


def dev_split(
    dataset: CachedVCRDataset, fraction: float, seed: int
) -> tuple[CachedVCRDataset, CachedVCRDataset]:
    """Carve a labelled dev split off a training split: ``(rest, dev)``. Whole **movies** go to
    one side, as VCR's train, val and test are disjoint by movie (frames of one film share
    actors, sets and near-duplicate scenes: a dev split that shares movies with training favours
    what fits them, and every choice is made on dev). Movies are drawn with ``seed`` until
    ``fraction`` of the items are in dev. The same split, fraction and seed give the same carving,
    whatever the run's own seed: every trial and every rerun seed selects on one dev."""
    movies = dataset.movies()
    unique, counts = np.unique(movies, return_counts=True)
    shuffle = np.random.default_rng(seed).permutation(len(unique))
    order, sizes = unique[shuffle], counts[shuffle]
    enough = int(np.searchsorted(np.cumsum(sizes), fraction * len(movies))) + 1  # first >= it
    in_dev = np.isin(movies, order[:enough])
    if in_dev.all():
        raise InputError(
            f"dev_fraction {fraction}: leaves no training items ({len(movies)} items in "
            f"{len(unique)} movies; the dev split takes whole movies)"
        )
    return dataset.subset(np.flatnonzero(~in_dev)), dataset.subset(np.flatnonzero(in_dev))
