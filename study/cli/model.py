"""``vcr-study train | predict | evaluate``: one model, no study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from study.cli.app import app
from study.cli.options import (
    CacheOption,
    DataOption,
    DeviceOption,
    ImageSizeOption,
    ImageWeightsOption,
    StorageOption,
    TextEncoderOption,
    TextLayerOption,
    feature_choice,
    overrides,
    splits,
)


@app.command("train")
def train_command(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints and metrics.jsonl.")],
    method: Annotated[
        str, typer.Option(help="Coupling: softmax, gumbel, reinforce, direct16 or teacher.")
    ] = "softmax",
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE of vcrnet.config.TrainConfig (repeatable)."),
    ] = None,
    data: DataOption = None,
    cache: CacheOption = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = False,
    text_encoder: TextEncoderOption = None,
    text_layer: TextLayerOption = None,
    image_weights: ImageWeightsOption = None,
    image_size: ImageSizeOption = None,
    storage: StorageOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Train one configuration, one epoch's metrics a line.

    Example: vcr-study train --method gumbel --set tau_start=5 --set anneal_epochs=10 --out runs/g
    """
    from study import api
    from vcrnet.metrics import OBJECTIVE, REPORTED

    def show(metrics: dict, _: Path) -> None:
        typer.echo(
            f"epoch {metrics['epoch']:>2}  loss {metrics['train_loss']:.3f}  "
            f"val Q->A {metrics['val_q2a']:.3f}  QA->R {metrics['val_qa2r']:.3f}  "
            f"QA->R|pred {metrics['val_qa2r_pred']:.3f}  Q->AR {metrics[REPORTED]:.3f}"
            f"  dev Q->AR {metrics[OBJECTIVE]:.3f}"
            f"  {metrics['train_items_per_s']:.0f} items/s"
        )

    values = {"method": method, **overrides(sets, epochs)}
    history = api.train(
        out,
        values,
        data,
        cache,
        feature_choice(text_encoder, text_layer, image_weights, image_size, storage),
        resume=resume,
        on_epoch=show,
        echo=typer.echo,
        device=device,
    )
    objective = values.get("objective", OBJECTIVE)  # what the run selected its epoch on
    best = max(history, key=lambda m: m[objective]) if history else None  # the first best
    if best:
        typer.echo(
            f"best epoch on dev {best['epoch']}: {objective} {best[objective]:.3f}, "
            f"val Q->AR {best[REPORTED]:.3f}; "
            f"checkpoints and metrics.jsonl in {out.absolute()}"
        )


@app.command("predict")
def predict_command(
    checkpoint: Annotated[
        str,
        typer.Option(
            help="A checkpoint.pt or best.pt, or a study trial's logged weights: its MLflow run "
            "id or runs:/<run id>/model/best.pt (vcr-study best lists them)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The CSV to write.")],
    data: DataOption = None,
    cache: CacheOption = None,
    split: Annotated[str, typer.Option(help="Split to predict.")] = "test",
    text_encoder: TextEncoderOption = None,
    text_layer: TextLayerOption = None,
    image_weights: ImageWeightsOption = None,
    image_size: ImageSizeOption = None,
    storage: StorageOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Write the 21-column VCR leaderboard CSV (probabilities) for every item of a split, on
    the features the checkpoint was trained on (and its data folder, unless --data is given).

    \b
    Examples:
      vcr-study predict --checkpoint runs/g/best.pt --data ~/vcr1 --out submission.csv
      vcr-study predict --checkpoint runs:/<run id>/model/best.pt --out val.csv --split val
    """
    from study import api

    rows, path = api.predict(
        checkpoint,
        out,
        splits([split])[0],
        data,
        cache,
        feature_choice(text_encoder, text_layer, image_weights, image_size, storage),
        echo=typer.echo,
        device=device,
    )
    typer.echo(f"wrote {rows} rows to {path}")


@app.command("evaluate")
def evaluate_command(
    predictions: Annotated[Path, typer.Option(help="A leaderboard CSV.")],
    data: DataOption = None,
    split: Annotated[str, typer.Option(help="A labelled split.")] = "val",
) -> None:
    """Score a leaderboard CSV against a labelled split, as the leaderboard does (the built-in
    data's test split too: its labels are kept beside test.jsonl).

    Example: vcr-study evaluate --predictions val.csv --data ~/vcr1 --split val
    """
    from study import api

    count, metrics = api.evaluate(predictions, splits([split])[0], data)
    typer.echo(
        f"{count} items: Q->A {metrics['q2a']:.4f}  QA->R {metrics['qa2r']:.4f}  "
        f"Q->AR {metrics['q2ar']:.4f}"
    )
