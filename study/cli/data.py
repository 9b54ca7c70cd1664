"""``vcr-study data``: VCR-format data: generate, check, extract features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from study.cli.app import data_app
from study.cli.options import (
    CacheOption,
    ImageSizeOption,
    ImageWeightsOption,
    SplitOption,
    StorageOption,
    TextEncoderOption,
    TextLayerOption,
    feature_choice,
    splits,
)
from vcrnet.errors import InputError


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to create (must not exist).")],
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed writes the same files.")
    ] = 0,
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
    for name in splits(split):
        typer.echo("\n".join(check_split(data, name).lines()))


@data_app.command("features")
def data_features(
    data: Annotated[Path, typer.Argument(help="A VCR directory (*.jsonl and vcr1images/).")],
    cache: CacheOption = None,
    split: SplitOption = None,
    text_encoder: TextEncoderOption = None,
    text_layer: TextLayerOption = None,
    image_weights: ImageWeightsOption = None,
    image_size: ImageSizeOption = None,
    storage: StorageOption = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Extract on this Ray cluster's workers (default: in this process).",
            envvar="RAY_ADDRESS",
            rich_help_panel="Where",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Extraction workers (default: with --address, one per GPU of the cluster; "
            "without, 0: in this process; N > 0: a local Ray with N).",
            rich_help_panel="Where",
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option(
            help="GPUs per worker (default: 1 where the Ray's nodes have GPUs, else 0).",
            rich_help_panel="Where",
        ),
    ] = None,
    cpus_per_worker: Annotated[
        float | None,
        typer.Option(
            help="CPUs per worker: its threads for images and wordpieces (default: 4 with a GPU, "
            "else a node's CPUs shared among --workers).",
            rich_help_panel="Where",
        ),
    ] = None,
) -> None:
    """Extract text and object features once into the cache (reused when present), in shards:
    an interrupted extraction resumes from the shards it finished.

    Example: vcr-study data features ~/vcr1 --text-encoder bert-base-uncased \\
    --image-weights ~/resnet50-0676ba61.pth

    On a cluster's GPU workers: vcr-study data features /mnt/shared/vcr1 --address auto \\
    --text-encoder bert-base-uncased --image-weights /mnt/shared/resnet50-0676ba61.pth
    """
    from study import inputs

    choice = feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    run = inputs.workers_for(address, workers, gpus_per_worker, cpus_per_worker)
    found = inputs.resolve(
        data,
        cache,
        choice,
        splits(split),
        echo=typer.echo,
        split_option=True,
        data_option="DATA",
        run=run,
    )
    for name, entries in found.splits.items():
        for kind, entry in (("text", entries.text), ("objects", entries.objects)):
            state = "extracted" if kind in entries.computed else "cached"
            typer.echo(f"{name} {kind}: {state} {entry}")


@data_app.command("prepare")
def data_prepare(
    data: Annotated[
        Path | None,
        typer.Option(
            help="A VCR directory (default: the built-in synthetic dataset, generated once)."
        ),
    ] = None,
    cache: CacheOption = None,
    text_encoder: TextEncoderOption = None,
    text_layer: TextLayerOption = None,
    image_weights: ImageWeightsOption = None,
    image_size: ImageSizeOption = None,
    storage: StorageOption = None,
) -> None:
    """Generate (once) the built-in synthetic dataset, check it and extract its features.

    Example: vcr-study data prepare
    """
    from study import inputs
    from vcrnet.data import SPLITS
    from vcrnet.data.check import check_split

    root, _ = inputs.data_root(data, SPLITS)
    typer.echo(f"data: {root}")
    for split in SPLITS:
        typer.echo("\n".join(check_split(root, split).lines()))
    choice = feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    found = inputs.resolve(None if data is None else root, cache, choice, SPLITS, echo=typer.echo)
    for split, entries in found.splits.items():
        state = "extracted" if entries.computed else "cached"
        typer.echo(f"{split} features ({state}): {entries.text.name}, {entries.objects.name}")
    typer.echo(f"feature cache: {entries.text.parent}")
