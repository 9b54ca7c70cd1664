"""Validate a VCR directory split by split and summarise it (``vcr-study data check``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vcrnet.data.grounding import ground_item
from vcrnet.data.records import NUM_CHOICES, ImageMetadata, image_path, iter_split, load_metadata


@dataclass
class SplitSummary:
    split: str
    items: int = 0
    images: int = 0
    detections: list[int] = field(default_factory=list)  # per item, in ``objects``
    kept: list[int] = field(default_factory=list)  # per item, R2C's relevant ones + the image
    question_tokens: list[int] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)
    rationale_tokens: list[int] = field(default_factory=list)
    answer_labels: Counter = field(default_factory=Counter)
    rationale_labels: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        def stat(name: str, values: list[int]) -> str:
            v = np.asarray(values or [0])
            return f"  {name:<24} mean {v.mean():6.2f}  min {v.min():4d}  max {v.max():4d}"

        out = [
            f"{self.split}: {self.items} items, {self.images} images",
            stat("detections per item", self.detections),
            stat("objects kept per item", self.kept),
            stat("question tokens", self.question_tokens),
            stat("answer tokens", self.answer_tokens),
            stat("rationale tokens", self.rationale_tokens),
        ]
        for name, counts in (
            ("answer labels", self.answer_labels),
            ("rationale labels", self.rationale_labels),
        ):
            if counts:
                total = sum(counts.values())
                shares = "  ".join(
                    f"{k}: {100 * counts[k] / total:4.1f}%" for k in range(NUM_CHOICES)
                )
                out.append(f"  {name:<24} {shares}")
            else:
                out.append(f"  {name:<24} none (unlabelled split)")
        return out


def check_split(root: str | Path, split: str) -> SplitSummary:
    """Read every line, its image and its metadata; raise on the first problem."""
    summary = SplitSummary(split)
    seen: dict[str, ImageMetadata] = {}
    for item in iter_split(root, split):
        if item.metadata_fn not in seen:
            image_path(root, item)
            seen[item.metadata_fn] = load_metadata(root, item)
        elif seen[item.metadata_fn].names != item.objects:
            load_metadata(root, item)  # raises, naming this line
        grounded = ground_item(item)
        summary.items += 1
        summary.detections.append(len(item.objects))
        summary.kept.append(1 + len(grounded.kept))
        summary.question_tokens.append(len(grounded.question.words))
        summary.answer_tokens += [len(s.words) for s in grounded.answers]
        summary.rationale_tokens += [len(s.words) for s in grounded.rationales]
        if item.answer_label is not None:
            summary.answer_labels[item.answer_label] += 1
            summary.rationale_labels[item.rationale_label] += 1
    summary.images = len(seen)
    return summary
