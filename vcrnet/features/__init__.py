"""Features extracted once per split and cached: text (BERT-family) and objects (ResNet-50 RoIs)."""

from vcrnet.features.dataset import CachedVCRDataset, collate, dev_split
from vcrnet.features.extract import (
    SplitFeatures,
    cached_settings,
    entry_paths,
    extract_split,
    extract_splits,
)
from vcrnet.features.settings import FeatureChoice, FeatureSettings

__all__ = [
    "CachedVCRDataset",
    "FeatureChoice",
    "FeatureSettings",
    "SplitFeatures",
    "cached_settings",
    "collate",
    "dev_split",
    "entry_paths",
    "extract_split",
    "extract_splits",
]
