"""The input path of training and evaluation: batches gathered packed on the host, padded on the
device.

``collate`` pads every item on the host in float32, ~0.4 GB per batch of 96 at VCR's shape: more
than a GPU should wait for. Here a batch travels as the cache stores it:

1. ``gather`` (host, in a background thread ``prefetch`` batches ahead): the batch's word and
   object rows in float16, packed (no padding), with the integer indexes saying which row each
   padded slot reads; into pinned memory when bound for a GPU. Whole-array numpy gathers, no
   loop over items.
2. copies to the device, non-blocking, on a side stream on a GPU (the next batch's copy runs while
   this one trains);
3. ``unpad`` (device): float32 and padded by one index per field. The result is the batch
   documented in ``vcrnet.features.dataset``, bit for bit what ``collate`` makes
   (tests/vcrnet/test_batches.py).

``epoch_order`` makes each epoch's batches: a seeded shuffle (R2C's, the default); with
``bucket_batches``, items then sorted within buckets of that many batches by their size times a
noise drawn afresh each epoch (``BUCKET_NOISE``), and the batches shuffled again: less padding,
though a batch is then no random draw of its bucket. Sorted by size alone, buckets batched one
question type together (44% of the built-in data's batches) and the same neighbours every epoch
(20% of pairs again); the noise brings both near a plain shuffle's and keeps part of the saving
(``composition`` measures it; docs/benchmarks.md, "Batch composition"). ``Batches`` puts the
three steps together for a list of batches.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
from collections.abc import Iterator

import numpy as np
import torch

from vcrnet.data.records import NUM_CHOICES
from vcrnet.errors import InputError
from vcrnet.features.cache import QuantizedRows
from vcrnet.features.dataset import HOST_KEYS, TAG_NAMES, TEXT_FIELDS, CachedVCRDataset

BUCKET_NOISE = 0.1  # the spread of the buckets' sort keys (log scale): docs/fidelity.md R10

_PAIR_FIELDS = {  # field -> (pairs of the item's 20, context (True) or choice words)
    "question": (slice(0, NUM_CHOICES), True),
    "answers": (slice(0, NUM_CHOICES), False),
    "rationale_query": (slice(NUM_CHOICES, None), True),
    "rationales": (slice(NUM_CHOICES, None), False),
}


def item_sizes(dataset: CachedVCRDataset) -> np.ndarray:
    """``[len]``: the padded word rows each item would need in a batch of its own: what length
    buckets sort by."""
    return padded_text_rows(np.asarray(dataset.arrays["index"][dataset.items]), axis=1)


def padded_text_rows(index: np.ndarray, axis: int | None) -> np.ndarray:
    """Padded word rows per item: the 4 question-answer pairs at their longest, the 16
    query-rationale pairs at theirs. ``index [N, 20, 3]`` (the cache's); the longest taken over
    ``axis``: 1, each item alone (``[N]``); None, the N items as one batch (a scalar)."""
    ctx, choice = index[..., 1], index[..., 2]
    q, r = slice(0, NUM_CHOICES), slice(NUM_CHOICES, None)
    return NUM_CHOICES * (ctx[:, q].max(axis) + choice[:, q].max(axis)) + NUM_CHOICES**2 * (
        ctx[:, r].max(axis) + choice[:, r].max(axis)
    )


def epoch_order(
    sizes: np.ndarray,
    batch_size: int,
    seed: int,
    bucket_batches: int = 0,
    noise: float = BUCKET_NOISE,
) -> list[np.ndarray]:
    """The positions of each batch of an epoch, drawn with ``seed``. ``bucket_batches`` 0 or 1:
    a plain shuffle (R2C's); > 1: noisy length buckets of that many batches (module docstring),
    sorted by ``size * exp(N(0, noise))`` drawn afresh each epoch. Every item once;
    ``ceil(n / batch_size)`` batches either way."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sizes))
    if bucket_batches <= 1:
        return _chunks(order, batch_size)
    keys = sizes * np.exp(rng.normal(0.0, noise, len(sizes))) if noise > 0 else sizes
    for bucket in _chunks(order, batch_size * bucket_batches):  # views: sorted in place
        bucket[:] = bucket[np.argsort(keys[bucket], kind="stable")]
    batches = _chunks(order, batch_size)
    return [batches[i] for i in rng.permutation(len(batches))]


def composition(
    epoch: list[np.ndarray], following: list[np.ndarray], groups: np.ndarray
) -> dict[str, float]:
    """What an epoch's batches hold, for comparing samplers: ``single_group``, the share of its
    batches of two or more items whose items all share one ``groups`` value (e.g. the question
    type); ``together_again``, the share of the pairs of items batched together in ``epoch``
    that the ``following`` epoch batches together again."""
    groups = np.asarray(groups)
    several = [b for b in epoch if len(b) > 1]
    single = sum(len(np.unique(groups[b])) == 1 for b in several)
    batch_of = np.empty(sum(len(b) for b in following), dtype=np.int64)
    for number, b in enumerate(following):
        batch_of[b] = number
    pairs = again = 0
    for b in several:
        pairs += len(b) * (len(b) - 1) // 2
        counts = np.unique(batch_of[b], return_counts=True)[1]
        again += int((counts * (counts - 1) // 2).sum())
    return {
        "single_group": single / max(len(several), 1),
        "together_again": again / max(pairs, 1),
    }


def sorted_order(sizes: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of items of similar size, for evaluation (where the order does not matter)."""
    return _chunks(np.argsort(sizes, kind="stable"), batch_size)


def _chunks(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[s : s + size] for s in range(0, len(order), size)]


def gather(
    dataset: CachedVCRDataset, positions: np.ndarray, pin: bool = False
) -> dict[str, torch.Tensor]:
    """The packed host batch of the items at ``positions``: ``text [R + 1, D]`` and ``objects
    [M, 2048]`` float16 rows (text's last row zero: padding reads it; int8-stored text stays int8
    here, with ``text_scales [R + 1]``, and is widened on the device), each text field's
    ``<field>_rows`` (the row of each padded slot) and its tags, mask and lengths, the object
    slots' ``object_index``, classes, mask and boxes, labels and positions."""
    a, positions = dataset.arrays, np.asarray(positions, dtype=np.int64)
    items = dataset.items[positions]
    index = np.asarray(a["index"][items])  # [B, 20, 3]: first row, context, choice words
    first, ctx, choice = index[..., 0], index[..., 1], index[..., 2]
    pair_rows = (ctx + choice).ravel()
    starts = np.cumsum(pair_rows) - pair_rows  # each pair's first row in the packed text
    total = int(pair_rows.sum())
    text_rows, extra = a["text"], {}
    quantized = isinstance(text_rows, QuantizedRows)  # int8: codes and scales, as stored
    text = _empty((total + 1, text_rows.shape[1]), pin, np.int8 if quantized else np.float16)
    tags = np.zeros(total + 1, dtype=np.int16)
    copies = [(a["tags"], tags)]
    if quantized:
        extra["text_scales"] = torch.zeros(total + 1, dtype=torch.float32)
        copies += [
            (text_rows.codes, text.numpy()),
            (text_rows.scales, extra["text_scales"].numpy()),
        ]
    else:
        copies.append((text_rows, text.numpy()))
    for source, target in copies:
        _copy_ranges(source, first.ravel(), pair_rows, target)
    text[total] = 0
    tags = tags.astype(np.int64)
    starts = starts.reshape(first.shape)
    rationale_words = choice[:, NUM_CHOICES:].reshape(-1, NUM_CHOICES, NUM_CHOICES)
    if (rationale_words != rationale_words[:, :1]).any():  # the model relies on it (joint.py)
        raise InputError(
            f"{dataset.text_entry}: a rationale's word count differs between the "
            "answers it is encoded beside"
        )
    batch = {"text": text, **extra}
    for name in TEXT_FIELDS:
        pairs, context = _PAIR_FIELDS[name]
        begin = starts[:, pairs] + (0 if context else ctx[:, pairs])
        lengths = (ctx if context else choice)[:, pairs]
        if name.startswith("rationale"):
            begin = begin.reshape(-1, NUM_CHOICES, NUM_CHOICES)
            lengths = lengths.reshape(-1, NUM_CHOICES, NUM_CHOICES)
        slots = np.arange(lengths.max())
        mask = slots < lengths[..., None]
        rows = np.where(mask, begin[..., None] + slots, total)
        prefix = TAG_NAMES[name]
        batch.update(
            {
                f"{name}_rows": torch.from_numpy(rows),
                f"{prefix}_tags": torch.from_numpy(tags[rows]),
                f"{prefix}_mask": torch.from_numpy(mask),
                f"{prefix}_lengths": torch.from_numpy(lengths.astype(np.int64)),
            }
        )
    batch.update(_gather_objects(a, items, pin))
    labels = np.asarray(dataset.labels[positions], dtype=np.int64)
    batch.update(
        answer_label=torch.from_numpy(np.ascontiguousarray(labels[:, 0])),
        host_answer_label=torch.from_numpy(np.ascontiguousarray(labels[:, 0])),
        rationale_label=torch.from_numpy(np.ascontiguousarray(labels[:, 1])),
        index=torch.from_numpy(positions),
    )
    if pin:  # a copy from pageable memory may wait for the device: pin the small ones too
        batch = {
            k: v if k in HOST_KEYS or v.is_pinned() else v.pin_memory() for k, v in batch.items()
        }
    return batch


def _gather_objects(
    a: dict[str, np.ndarray], items: np.ndarray, pin: bool
) -> dict[str, torch.Tensor]:
    lo, hi = np.asarray(a["offsets"][items]), np.asarray(a["offsets"][items + 1])
    counts = hi - lo
    starts = np.cumsum(counts) - counts
    rows = np.asarray(a["rows"][np.repeat(lo - starts, counts) + np.arange(counts.sum())])
    objects = _empty((len(rows), a["objects"].shape[1]), pin)
    np.take(a["objects"], rows, axis=0, out=objects.numpy(), mode="clip")
    slots = np.arange(counts.max())
    mask = slots < counts[:, None]
    object_index = np.where(mask, starts[:, None] + slots, 0)
    classes = np.where(mask, np.asarray(a["classes"][rows], dtype=np.int64)[object_index], 0)
    boxes = np.where(mask[..., None], np.asarray(a["boxes"][rows])[object_index], 0)
    return {
        "objects": objects,
        "object_index": torch.from_numpy(object_index),
        "object_classes": torch.from_numpy(classes),
        "object_mask": torch.from_numpy(mask),
        "boxes": torch.from_numpy(boxes.astype(np.float32)),
    }


def _copy_ranges(
    source: np.ndarray, first: np.ndarray, lengths: np.ndarray, target: np.ndarray
) -> None:
    """Rows ``first[i] : first[i] + lengths[i]`` of ``source``, for each i in turn, into
    ``target`` back to back; ranges that follow each other in ``source`` (an item's 20 pairs)
    are copied as one (a memcpy of ~0.8 MB an item at VCR's shape, not 540 row copies)."""
    dest = np.cumsum(lengths) - lengths
    breaks = np.flatnonzero(first[1:] != first[:-1] + lengths[:-1]) + 1
    for s, e in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(first)]])):
        n = dest[e - 1] + lengths[e - 1] - dest[s]
        target[dest[s] : dest[s] + n] = source[first[s] : first[s] + n]


def _empty(shape: tuple[int, ...], pin: bool, dtype: type = np.float16) -> torch.Tensor:
    """A host buffer: pinned (from torch's caching host allocator, reused batch after batch) for
    a GPU; else numpy's, which asks for huge pages (torch's own CPU allocations fault 4 KiB pages
    one by one: 4x slower to fill at ~80 MB a batch, measured)."""
    if pin:
        return torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True)
    return torch.from_numpy(np.empty(shape, dtype=dtype))


def unpad(packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A packed batch (``gather``'s, on any device) -> the padded float32 batch, on that
    device."""
    text = packed["text"]
    if "text_scales" in packed:  # int8 rows: widened here, rounded to float16 as the host would
        text = (text.float() * packed["text_scales"].unsqueeze(1)).half()
    batch = {
        k: v
        for k, v in packed.items()
        if k not in ("text", "text_scales") and not k.endswith("_rows")
    }
    for name in TEXT_FIELDS:  # gathered in float16, then widened: 4x faster than the other
        rows = packed[f"{name}_rows"]  # way round on a CPU, measured
        batch[name] = text.index_select(0, rows.flatten()).view(*rows.shape, -1).float()
    batch["objects"] = packed["objects"].float()
    return batch


class Batches:
    """The batches at ``order`` (lists of positions), padded on ``device``, in that order; each
    gathered ``prefetch`` batches ahead in a background thread (0: when asked for)."""

    def __init__(
        self,
        dataset: CachedVCRDataset,
        order: list[np.ndarray],
        device: torch.device | str = "cpu",
        prefetch: int = 2,
    ):
        self.dataset, self.order = dataset, order
        self.device, self.prefetch = torch.device(device), prefetch

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            positions = iter(self.order)  # the first batches, then one more for each taken
            pending = collections.deque(
                pool.submit(gather, self.dataset, p, cuda)
                for p in itertools.islice(positions, self.prefetch + 1)
            )
            copied = self._copy(pending.popleft().result(), stream) if pending else None
            while copied is not None:
                if (p := next(positions, None)) is not None:
                    pending.append(pool.submit(gather, self.dataset, p, cuda))
                following = self._copy(pending.popleft().result(), stream) if pending else None
                yield unpad(self._ready(*copied))
                copied = following

    def _copy(
        self, host: dict[str, torch.Tensor], stream: torch.cuda.Stream | None
    ) -> tuple[dict[str, torch.Tensor], torch.cuda.Event | None]:
        """Start copying a host batch to the device (on ``stream``; the lengths stay); the
        event marks the end of this batch's copies."""
        if stream is None:
            return {k: v.to(self.device) for k, v in host.items()}, None
        with torch.cuda.stream(stream):
            batch = {
                k: v if k in HOST_KEYS else v.to(self.device, non_blocking=True)
                for k, v in host.items()
            }
            return batch, stream.record_event()

    @staticmethod
    def _ready(
        batch: dict[str, torch.Tensor], copied: torch.cuda.Event | None
    ) -> dict[str, torch.Tensor]:
        """Make the compute stream wait for this batch's copies (not the next one's, already
        under way), and tell the allocator which stream uses their memory."""
        if copied is not None:
            current = torch.cuda.current_stream()
            current.wait_event(copied)
            for v in batch.values():
                if v.is_cuda:
                    v.record_stream(current)
        return batch
