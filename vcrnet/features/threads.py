"""Reading beside computing: the next batch prepared in a thread while this one is used."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import TypeVar

Batch = TypeVar("Batch")
Prepared = TypeVar("Prepared")


def prefetched(prepare: Callable[[Batch], Prepared], batches: list[Batch]) -> Iterator[Prepared]:
    """``prepare(batch)`` for each batch in order, the following one prepared in a thread
    meanwhile (JPEG decoding and tokenising release the GIL: they overlap the encoders)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(prepare, batches[0]) if batches else None
        for following in [*batches[1:], None]:
            ready = pending.result()
            pending = pool.submit(prepare, following) if following is not None else None
            yield ready
