"""Features extracted once per split and cached: text (BERT-family) and objects (ResNet-50 RoIs)."""

from vcrnet.features.dataset import CachedVCRDataset, collate
from vcrnet.features.extract import FeatureSettings, SplitFeatures, extract_split

__all__ = ["CachedVCRDataset", "FeatureSettings", "SplitFeatures", "collate", "extract_split"]
