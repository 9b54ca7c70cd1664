"""``vcr-study launch | best | ablations | rerun | studies | delete``: studies."""

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
)
from vcrnet.errors import InputError


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
    finals: Annotated[
        int,
        typer.Option(
            help="When the search ends, re-train each approach's best configuration with this "
            "many new seeds and judge them (vcr-study finals --seeds K); 0: no finals.",
        ),
    ] = 0,
) -> None:
    """Run a study: Ray Tune trials, Optuna search, ASHA early stopping, MLflow tracking.

    With no options: the built-in synthetic data, a local Ray, a few minutes on 2 CPUs.

    Example: vcr-study launch --name joint1 --space joint --trials 40 --gpus-per-trial 0.25

    What it will cost, first: vcr-study launch --name joint1 --space joint --trials 40 --dry-run
    """
    from study import api
    from study.store import LaunchOptions

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
        overrides=overrides(sets, epochs),
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
    choice = feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    if finals < 0:
        raise InputError(f"--finals {finals}: must be 0 (no finals) or more seeds")
    if dry_run:
        api.dry_run(options, resume=resume, echo=typer.echo, choice=choice)
        return
    api.launch(options, resume=resume, choice=choice, verbose=verbose)
    _print_best(api.best(options.name))
    if finals:
        report = api.finals(
            options.name,
            seeds=finals,
            concurrent=concurrent,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            verbose=verbose,
        )
        _print_finals(options.name, report)
    typer.echo(
        f"\nstudy {options.name} done. Next: vcr-study best --name {options.name}; "
        f"vcr-study ablations --name {options.name}; vcr-study ui"
    )


@app.command("best")
def best_command(
    name: Annotated[str, typer.Option(help="The study.")],
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

    finals = api.finals_table(name)
    if as_json:
        rows = api.best_rows(name)
        if not finals.empty:
            rows = {"search": rows, "finals": finals.to_dict("records")}
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    _print_best(api.best(name))
    if not finals.empty:
        shown = [
            c
            for c in (
                "approach",
                "seeds",
                "failed runs",
                "selected on",
                "dev Q->AR",
                "val_q2a",
                "val_q2ar",
                "val_q2ar +-95%",
                "test_q2ar",
            )
            if c in finals
        ]
        typer.echo(
            "\nfinals (each approach's finalist over its seeds; vcr-study verdict --name "
            f"{name} compares them):"
        )
        typer.echo(
            finals[shown].to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}")
        )


@app.command("finals")
def finals_command(
    name: Annotated[str, typer.Option(help="The study.")],
    top: Annotated[int, typer.Option(help="Configurations per approach, best on dev first.")] = 1,
    method: Annotated[
        str | None,
        typer.Option(help="Only this approach (a method, or a grid row's label)."),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(help="Only the search trial of this MLflow run (best lists the best ones)."),
    ] = None,
    seeds: Annotated[
        int, typer.Option(help="Seeds per configuration (1, 2, ...: never the search's own).")
    ] = 3,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: each trial's).")] = None,
    concurrent: Annotated[int, typer.Option(help="Finals trials at once at most.")] = 2,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs per trial.")] = 1.0,
    gpus_per_trial: Annotated[
        float, typer.Option(help="GPUs per trial; fractions pack several trials on one GPU.")
    ] = 0.0,
    resume: Annotated[
        bool, typer.Option(help="Finish the finals a stopped driver left (their options hold).")
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(
            help="The Ray cluster to run them on (default: the study's own).",
            envvar="RAY_ADDRESS",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show what Ray, Tune and MLflow print.")
    ] = False,
) -> None:
    """Re-train each approach's best configurations with new seeds, as Ray Tune trials of the
    study (on its cluster's workers, in parallel, resumable), then judge the approaches
    against each other (the verdict) and write the test submission from the winner.

    \b
    Example: vcr-study finals --name joint1 --seeds 5 --concurrent 4 --gpus-per-trial 0.5
    One:     vcr-study finals --name joint1 --method gumbel (or --run <run id>)
    Resume:  vcr-study finals --name joint1 --resume
    """
    from study import api

    report = api.finals(
        name,
        top,
        seeds,
        epochs,
        concurrent,
        cpus_per_trial,
        gpus_per_trial,
        resume,
        verbose,
        address,
        method,
        run,
    )
    _print_finals(name, report)


@app.command("verdict")
def verdict_command(name: Annotated[str, typer.Option(help="The study.")]) -> None:
    """The finals' verdict, read back from MLflow: each approach's finalist over its seeds and,
    for every pair, the difference in val Q->AR with its 95% paired bootstrap interval
    (questions and seeds), p (Holm-corrected) and the verdict; files rewritten under
    reports/NAME/ and logged to the study's parent run.

    Example: vcr-study verdict --name joint1
    """
    from study import api

    _print_finals(name, api.verdict(name))


@app.command("ablations")
def ablations_command(name: Annotated[str, typer.Option(help="The study.")]) -> None:
    """The study's ablation tables and plots (CSV, Markdown, PNG, HTML) under reports/NAME/,
    also logged to the study's parent run in MLflow. A study of the paper space also gets the
    paper's Tables 1, 2 and 4 with the paper's numbers beside its own.

    Example: vcr-study ablations --name joint1
    """
    from study import api, store
    from study.reports import TABLES

    written = api.write_ablations(name)
    if not written:
        typer.echo("no trial runs yet: nothing to report")
        return
    typer.echo("\n".join(["wrote:", *(f"  {p}" for p in written if p.suffix != ".js")]))
    for table in (store.reports_dir(name) / f"{t}.md" for t in ("best_per_method", *TABLES)):
        if table.is_file():
            typer.echo("\n" + table.read_text())


@app.command("studies")
def studies_command() -> None:
    """The studies in this home: name, state, trials, best dev Q->AR, disk used.

    Example: VCR_STUDY_HOME=/mnt/shared/runs vcr-study studies
    """
    from study import store

    rows = store.study_rows()
    typer.echo(store.format_table(rows) if rows else f"no studies in {store.home()}")


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
    from study import store

    if not yes and not typer.confirm(f"{store.describe_deletion(name, tracking_uri)}?"):
        typer.echo("nothing deleted", err=True)
        raise typer.Exit(1)
    for line in store.delete_study(name, tracking_uri):
        typer.echo(line)


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
    seeds: Annotated[int, typer.Option(min=1, help="Seeds (1..K: never the search's own).")] = 3,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (default: the trial's).")
    ] = None,
    text_encoder: TextEncoderOption = None,
    text_layer: TextLayerOption = None,
    image_weights: ImageWeightsOption = None,
    image_size: ImageSizeOption = None,
    storage: StorageOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Train the winning config to completion with K seeds; write the test leaderboard CSV.
    Uses the study's own data and features (feature options may only repeat them).

    \b
    Examples:
      vcr-study rerun --name joint1 --method gumbel --seeds 3 --epochs 20
      vcr-study rerun --name joint1 --run <run id> --seeds 3
    """
    from study import reports

    choice = feature_choice(text_encoder, text_layer, image_weights, image_size, storage)
    result = reports.rerun_study(
        name, method, run, seeds, epochs, choice, echo=typer.echo, device=device
    )
    typer.echo(
        f"{result.approach} ({result.method}), {seeds} seed(s), each at its best "
        "epoch on dev; validation and test (never selected on): mean +- std [95% interval]"
    )
    for key in result.mean:
        split = "test" if key.startswith("test_") else "validation"
        typer.echo(
            f"  {split:<10} {key:<20} {result.mean[key]:.4f} +- {result.std[key]:.4f}  "
            f"[{result.mean[key] - result.interval[key]:.4f}, "
            f"{result.mean[key] + result.interval[key]:.4f}]"
        )
    typer.echo(
        f"test submission (from seed {result.best_seed}, the best on dev; not an "
        f"ensemble): {result.submission}"
    )


def _print_finals(name: str, report) -> None:
    """A ``reports.FinalsReport``: the finalists over their seeds, the pairs, the submission."""
    from study import store

    typer.echo(
        "finals: each approach's finalist over its seeds, at each seed's best epoch on dev; "
        "val (never selected on): mean +- std [95% interval]"
    )
    for f in report.finalists:
        if not f.seeds:
            typer.echo(f"  {f.approach}: no finalist ({f.note})")
            continue
        extra = f" ({f.failed} run(s) failed)" if f.failed else ""
        typer.echo(
            f"  {f.approach} (trial {f.of_trial}, seeds {', '.join(map(str, f.seeds))}, selected "
            f"on {f.selected_on}){extra}{'; ' + f.note if f.note else ''}"
        )
        for key in f.mean:
            split = "test" if key.startswith("test_") else "validation"
            typer.echo(
                f"    {split:<10} {key:<18} {f.mean[key]:.4f} +- {f.std[key]:.4f}  "
                f"[{f.mean[key] - f.interval[key]:.4f}, {f.mean[key] + f.interval[key]:.4f}]"
            )
    if report.running:
        typer.echo(f"{report.running} finals run(s) have not ended: vcr-study finals --resume")
    table = store.reports_dir(name) / "verdict.md"
    typer.echo("\n" + (table.read_text() if table.is_file() else "no verdict written"))
    if report.submission:
        approach, seed, run_id = report.submission_from
        typer.echo(
            f"test submission: {report.submission} ({approach}, seed {seed}: its best on dev; "
            f"run {run_id})"
        )


def _print_best(best) -> None:
    """``study.api.best``'s table: each approach's best trial on dev, its val metrics there."""
    from vcrnet.metrics import OBJECTIVE, REPORTED

    if best.empty or best[OBJECTIVE].isna().all():
        typer.echo("no trial has reported a result yet")
        return
    shown = best[
        [
            "approach",
            OBJECTIVE,
            "val_q2a",
            "val_qa2r",
            REPORTED,
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
