"""The built-in default: where things go without options, and preparing the synthetic data.

Everything lives under ``./vcr-study-runs/`` (or ``$VCR_STUDY_HOME``), made absolute at once so that
Ray trials, which change directory, see the same paths.
"""

from __future__ import annotations

import os
from pathlib import Path

from vcrnet.data import SPLITS, write_synthetic
from vcrnet.data.check import SplitSummary, check_split
from vcrnet.features import FeatureSettings, SplitFeatures, extract_split

SYNTHETIC_SEED = 0
SYNTHETIC_IMAGE_SIZE = (384, 192)  # the synthetic JPEGs are ~420x225: R2C's 768x384 only upscales


def home() -> Path:
    return Path(os.environ.get("VCR_STUDY_HOME", "vcr-study-runs")).absolute()


def default_data_dir() -> Path:
    return home() / "data" / f"synthetic-seed{SYNTHETIC_SEED}"


def default_cache_dir() -> Path:
    return home() / "cache"


def builtin_settings() -> FeatureSettings:
    return FeatureSettings(image_size=SYNTHETIC_IMAGE_SIZE)


def prepare(data: Path | None = None, cache: Path | None = None,
            settings: FeatureSettings | None = None, splits: tuple[str, ...] = SPLITS,
            progress: bool = True) -> tuple[Path, dict[str, SplitFeatures], list[SplitSummary]]:
    """Generate the built-in data if ``data`` is None and missing, check it, extract features."""
    if data is None:
        data = default_data_dir()
        if not data.exists():
            write_synthetic(data, seed=SYNTHETIC_SEED)
        settings = settings or builtin_settings()
    cache = cache or default_cache_dir()
    settings = settings or FeatureSettings()
    summaries = [check_split(data, split) for split in splits]
    features = {split: extract_split(data, split, cache, settings, progress) for split in splits}
    return data, features, summaries


def split_features(data: Path | None, cache: Path | None, splits: tuple[str, ...],
                   settings: FeatureSettings | None = None
                   ) -> tuple[Path, dict[str, SplitFeatures], FeatureSettings]:
    """The features of ``splits``: the built-in dataset when ``data`` is None."""
    if data is None:
        root, features, _ = prepare(None, cache, settings, splits=splits)
        return root, features, settings or builtin_settings()
    settings = settings or FeatureSettings()
    cache = cache or default_cache_dir()
    return data.absolute(), {s: extract_split(data.absolute(), s, cache, settings)
                             for s in splits}, settings
