"""What the cached features depend on besides the data: one description, used everywhere.

``FeatureSettings`` is complete (every field has a value) and round-trips through plain dicts,
for checkpoints, ``study.json`` and MLflow params (where every value is a string)::

    FeatureSettings.from_dict(settings.to_dict()) == settings
    FeatureSettings.from_dict({k: str(v) for k, v in settings.to_dict().items()}) == settings

``FeatureChoice`` is what a user asked for on the command line: any subset of the fields. It
selects among the settings already extracted (``matches``) and fills the rest from a default
(``apply``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from vcrnet.data.grounding import DEFAULT_IMAGE_SIZE
from vcrnet.errors import InputError
from vcrnet.features.text import DEFAULT_TEXT_ENCODER, DEFAULT_TEXT_LAYER, MAX_WORDPIECES

MIN_IMAGE_SIDE = 32
# The largest canvas side: R2C's 768x384 and a 4K frame (3840x2160) at its own size fit; a
# 4096x4096 canvas is already 200 MB of float32 pixels and ~1 GB of stride-4 ResNet maps per
# image, and 30000x30000 would ask for more than 10 GB per image before the ResNet runs.
MAX_IMAGE_SIDE = 4096
STORAGES = ("float16", "int8")  # how the feature rows are stored (cache.open_rows reads both)


@dataclass(frozen=True)
class FeatureSettings:
    """Everything the cached features depend on besides the data."""

    text_encoder: str = DEFAULT_TEXT_ENCODER  # Hugging Face name or folder; "minilm": offline
    text_layer: int = DEFAULT_TEXT_LAYER  # hidden layer (-2: second to last, as R2C)
    max_wordpieces: int = MAX_WORDPIECES
    image_weights: str | None = None  # None: the torchvision cache, else a seeded random init
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE  # (width, height) of the canvas
    image_seed: int = 0
    storage: str = "float16"  # or "int8": a scale per row, half the bytes (docs/features.md)

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise InputError(f"storage {self.storage!r}: must be one of {', '.join(STORAGES)}")
        problem = image_size_problem(*self.image_size)
        if problem:
            raise InputError(f"image_size {_show('image_size', self.image_size)}: {problem}")

    def to_dict(self) -> dict:
        return {**asdict(self), "image_size": list(self.image_size)}

    @classmethod
    def from_dict(cls, values: dict, where: str = "feature settings") -> FeatureSettings:
        """From ``to_dict``'s output, or the same with every value a string (MLflow params)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{where}: unknown feature setting {unknown[0]!r}")
        return cls(**{k: _parse(k, v, where) for k, v in values.items()})

    def describe(self) -> str:
        """One line for people: ``text minilm (layer -2), image random ResNet-50 (seed 0) at
        384x192``."""
        from vcrnet.features.image import find_image_weights

        found = find_image_weights(self.image_weights) if self.image_weights is None else None
        weights = self.image_weights or (
            f"ResNet-50 {found}" if found else f"random ResNet-50 (seed {self.image_seed})"
        )
        stored = "" if self.storage == "float16" else f", stored in {self.storage}"
        return (
            f"text {self.text_encoder} (layer {self.text_layer}), image {weights} at "
            f"{self.image_size[0]}x{self.image_size[1]}{stored}"
        )


@dataclass(frozen=True)
class FeatureChoice:
    """The feature options a user gave; None: not given."""

    text_encoder: str | None = None
    text_layer: int | None = None
    image_weights: str | None = None
    image_size: tuple[int, int] | None = None
    storage: str | None = None

    def __post_init__(self) -> None:
        if self.storage is not None and self.storage not in STORAGES:
            raise InputError(
                f"--feature-storage {self.storage}: must be one of {', '.join(STORAGES)}"
            )
        if self.image_weights is not None:  # stored with the study: must not depend on the cwd
            object.__setattr__(self, "image_weights", str(Path(self.image_weights).absolute()))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(self.image_size))
            problem = image_size_problem(*self.image_size)
            if problem:
                raise InputError(f"--image-size {_show('image_size', self.image_size)}: {problem}")

    def given(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def matches(self, settings: FeatureSettings) -> bool:
        return not self._differences(settings)

    def apply(self, default: FeatureSettings) -> FeatureSettings:
        return replace(default, **self.given())

    def check_agrees(self, settings: FeatureSettings, where: str) -> None:
        """Options given to a command whose features are fixed (a checkpoint, a study)."""
        for key, value in self._differences(settings).items():
            raise InputError(
                f"--{key.replace('_', '-')} {_show(key, value)}: {where} was "
                f"trained on {_show(key, getattr(settings, key))}; leave the "
                "option out to use its features"
            )

    def _differences(self, settings: FeatureSettings) -> dict:
        """The options given whose value ``settings`` does not have."""
        return {k: v for k, v in self.given().items() if getattr(settings, k) != v}


def image_size_problem(width: int, height: int) -> str | None:
    """What is wrong with a ``width`` x ``height`` canvas (sides in ``MIN_IMAGE_SIDE`` ..
    ``MAX_IMAGE_SIDE``), or None."""
    if min(width, height) < MIN_IMAGE_SIDE:
        return f"both sides must be at least {MIN_IMAGE_SIDE} pixels"
    if max(width, height) > MAX_IMAGE_SIDE:
        return f"both sides must be at most {MAX_IMAGE_SIDE} pixels"
    return None


def _parse(key: str, value: object, where: str) -> object:
    if not isinstance(value, str):
        if key == "image_size" and (not isinstance(value, list | tuple) or len(value) != 2):
            raise InputError(f"{where}: image_size {value!r} is not [width, height]")
        return tuple(value) if key == "image_size" else value
    try:
        if key == "image_size":
            width, height = (int(v) for v in value.strip("()[] ").replace("x", ",").split(","))
            return width, height  # (a count other than 2 is a ValueError too)
        if key in ("text_layer", "max_wordpieces", "image_seed"):
            return int(value)
    except ValueError:
        raise InputError(f"{where}: {key} {value!r} is not valid") from None
    if key == "image_weights" and value in ("", "None", "null"):
        return None
    return value


def _show(key: str, value: object) -> str:
    return f"{value[0]}x{value[1]}" if key == "image_size" and value else str(value)
