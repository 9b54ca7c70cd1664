"""The built-in defaults: where things go without options, and the built-in data's settings
(``study.features`` resolves which features a command reads).

Everything lives under ``./vcr-study-runs/`` (or ``$VCR_STUDY_HOME``), made absolute at once so that
Ray trials, which change directory, see the same paths.
"""

from __future__ import annotations

import os
from pathlib import Path

from vcrnet.features import FeatureSettings

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
