"""VCR data: reading VCR 1.0 files, R2C's object grounding, and the synthetic dataset."""

from vcrnet.data.grounding import GroundedItem, Sentence, fit_image, ground_item, make_mask
from vcrnet.data.records import (
    SPLITS,
    ImageMetadata,
    VCRItem,
    image_path,
    iter_split,
    load_metadata,
    read_split,
    require_splits,
)
from vcrnet.data.synth import write_synthetic

__all__ = [
    "SPLITS",
    "GroundedItem",
    "ImageMetadata",
    "Sentence",
    "VCRItem",
    "fit_image",
    "ground_item",
    "image_path",
    "iter_split",
    "load_metadata",
    "make_mask",
    "read_split",
    "require_splits",
    "write_synthetic",
]
