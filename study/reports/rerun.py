"""``vcr-study rerun``: train a study's winning config to completion with several seeds, then write
the VCR leaderboard CSV for the test split.

Each seed is an MLflow run under the study's parent run, tagged with the trial it re-runs. Every
seed selects its epoch on the dev split (the same carving for all seeds); the validation metrics at
that epoch are summarised over the seeds as mean, standard deviation and a 95% confidence interval
(Student's t), and so are the test split's where its labels are known (the built-in data keeps
them beside test.jsonl; on real VCR only the leaderboard scores test). The CSV comes from the seed
with the best dev Q->AR (not an ensemble, and not chosen on val), is logged as an artifact of that
seed's run and written to ``reports/<name>/submission-<approach>.csv``. Epochs and the best seed
are chosen on the trial's own objective (``TrainConfig.objective``, dev Q->AR unless its row chose
another reading). The seeds are 1..K, never the trial's own (``study.search.final_seeds``): the
draw the search selected would bias the mean up (the winner's curse).

A rerun is one trial's seeds, one after the other, in this process on this machine's device;
``vcr-study finals`` (``study.launch.finals``) re-trains every approach's best configurations as
Tune trials on the study's cluster and judges the approaches against each other.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from study import inputs, store, tracking
from study.search import final_seeds, slug
from vcrnet.config import TrainConfig
from vcrnet.errors import InputError
from vcrnet.features import FeatureChoice
from vcrnet.metrics import DECODINGS, OBJECTIVE, REPORTED

# the readings summarised over seeds: every decoding but the diagnostic qa2r_joint16
SUMMARY_METRICS = tuple(f"val_{d}" for d in DECODINGS if d != "qa2r_joint16")
TEST_METRICS = tuple(f"test_{d}" for d in DECODINGS if d != "qa2r_joint16")  # labels known


@dataclass
class RerunResult:
    approach: str
    method: str
    mean: dict[str, float]
    std: dict[str, float]
    interval: dict[str, float]  # half-width of the 95% confidence interval of the mean
    submission: Path
    best_seed: int


def rerun_study(
    name: str,
    method: str | None,
    run: str | None,
    seeds: int,
    epochs: int | None,
    choice: FeatureChoice = FeatureChoice(),
    echo: Callable[[str], None] = print,
    device: str = "auto",
) -> RerunResult:
    """``vcr-study rerun``: study ``name``'s best trial of ``method`` (a method or a grid row's
    label; default the best overall), or the trial of MLflow run ``run``, trained ``seeds`` times
    on the study's own features, on ``device`` (auto, cpu or cuda); each seed a run of the
    study."""
    from vcrnet.device import check_device, choose_device

    check_device(device)
    if run and method:
        raise InputError("--run and --method: give one (the run names its trial)")
    options = store.load(name).options
    client, parent = store.open_study(name)
    if run:
        run_id, _ = tracking.parse_model_ref(run)  # a run id, or the runs:/ URI best prints
        chosen, config = winning_config(
            [tracking.trial_of_run(client, parent, run_id, OBJECTIVE)], None
        )
    else:
        chosen, config = winning_config(
            tracking.best_per_approach(client, parent, OBJECTIVE), method
        )
    echo(f"re-running trial {chosen['trial_id']} ({chosen['approach']}) with {seeds} seed(s)")
    found = inputs.for_study(options, ("train", "val", "test"), choice, where=f"study {name}")
    device, line = choose_device(device)
    echo(line)
    return rerun(
        client,
        parent,
        chosen,
        config,
        found.splits,
        found.extra(),
        store.reports_dir(name) / "rerun",
        seeds,
        epochs,
        echo=echo,
        device=device,
    )


def winning_config(best: list[dict], method: str | None) -> tuple[dict, TrainConfig]:
    """The best trial of ``method`` (a method, or a grid row's label; default: the best
    overall) and its TrainConfig."""
    if not best:
        raise InputError("the study has no finished trial to re-run yet")
    by_approach = [b for b in best if b["approach"] == method]
    by_method = [b for b in best if b["method"] == method]
    if method is not None and not by_approach and len(by_method) > 1:
        raise InputError(
            f"--method {method}: {len(by_method)} rows of the study use it ("
            f"{', '.join(b['approach'] for b in by_method)}): name one"
        )
    chosen = best[0] if method is None else (by_approach or by_method or [None])[0]
    if chosen is None:
        approaches = ", ".join(b["approach"] for b in best)
        raise InputError(
            f"--method {method}: no trial of that method or row (the study has {approaches})"
        )
    return chosen, TrainConfig.from_dict(chosen["config"], where="the trial's params")


def rerun(
    client,
    parent_run_id: str,
    chosen: dict,
    config: TrainConfig,
    features: dict,
    extra: dict,
    out: Path,
    seeds: int,
    epochs: int | None,
    echo=print,
    device: str = "cpu",
) -> RerunResult:
    from vcrnet.features import CachedVCRDataset
    from vcrnet.leaderboard import write_csv
    from vcrnet.train import BEST, fit, load_model, predict

    test_set = CachedVCRDataset(features["test"])
    test_labels = _test_labels(extra.get("data"), test_set.annot_ids)
    train_set, val_set = CachedVCRDataset(features["train"]), CachedVCRDataset(features["val"])
    results, folders = [], []
    test_predictions = {}  # seed -> its best checkpoint's test predictions, where scored
    name = slug(chosen.get("approach", config.method))
    used = final_seeds(seeds, config.seed)  # never the trial's own draw (the winner's curse)
    for seed in used:
        seed_config = config.replace(seed=seed, epochs=epochs or config.epochs)
        folder = out / f"{name}-seed{seed}"
        run_id = tracking.start_seed_run(
            client, parent_run_id, chosen, seed, seed_config.to_dict(), name
        )

        def log_epoch(metrics: dict, _: Path, run_id=run_id, seed=seed) -> None:
            tracking.log_metrics(client, run_id, metrics, metrics["epoch"])
            echo(
                f"seed {seed} epoch {metrics['epoch']}: dev Q->AR {metrics[OBJECTIVE]:.3f}, "
                f"val Q->AR {metrics[REPORTED]:.3f}"
            )

        resume = (folder / "checkpoint.pt").is_file()  # an interrupted rerun goes on
        history = fit(
            seed_config,
            train_set,
            val_set,
            folder,
            resume=resume,
            on_epoch=log_epoch,
            extra=extra,
            device=device,
        )
        # chosen on dev by the trial's own objective (as fit chose best.pt), reported on val
        best = max(history, key=lambda m: m[config.objective])
        results.append(
            {"selected": best[config.objective]}
            | {k: best[k] for k in ("epoch", OBJECTIVE, *SUMMARY_METRICS)}
        )
        if test_labels is not None:  # the built-in data: a test split never selected on
            test_predictions[seed] = predict(load_model(folder / BEST)[0].to(device), test_set)
            test = _score_test(test_predictions[seed], test_labels, seed_config)
            tracking.log_metrics(client, run_id, test, best["epoch"])
            results[-1].update(test)
        tracking.finish_seed_run(client, run_id)
        folders.append((folder, run_id))
    best = max(range(seeds), key=lambda i: results[i]["selected"])
    best_seed = used[best]
    p = test_predictions.get(best_seed)
    if p is None:
        p = predict(load_model(folders[best][0] / BEST)[0].to(device), test_set)
    submission = write_csv(
        out.parent / f"submission-{name}.csv", test_set.annot_ids, p.answer_probs, p.rationale_probs
    )
    tracking.log_submission(client, folders[best][1], Path(submission))
    keys = [k for k in (*SUMMARY_METRICS, *TEST_METRICS) if k in results[0]]
    mean = {k: statistics.fmean(r[k] for r in results) for k in keys}
    std = {k: statistics.stdev(r[k] for r in results) if seeds > 1 else 0.0 for k in keys}
    interval = {k: t_interval(std[k], seeds) for k in keys}
    return RerunResult(
        chosen.get("approach", config.method),
        config.method,
        mean,
        std,
        interval,
        Path(submission),
        best_seed,
    )


def t_interval(std: float, n: int) -> float:
    """Half-width of the 95% confidence interval of a mean of ``n`` values of standard
    deviation ``std`` (Student's t, ``n - 1`` degrees of freedom); NaN for one value."""
    if n < 2:
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)


def _test_labels(data: str | None, annot_ids: list[str]):
    """``(answer [N], rationale [N])`` label tensors of the test split where they are kept beside
    it (the built-in data), else None (real VCR: the leaderboard scores test)."""
    import torch

    from vcrnet.data.records import held_out_labels

    labels = held_out_labels(data, "test") if data else None
    if labels is None or any(i not in labels for i in annot_ids):
        return None
    pairs = torch.tensor([labels[i] for i in annot_ids])
    return pairs[:, 0], pairs[:, 1]


def _score_test(p, labels, config: TrainConfig) -> dict[str, float]:
    """The test metrics of predictions ``p`` (``vcrnet.train.Predictions``), every decoding (as
    val), the 16-way pick with the trial's coupling's pair scores."""
    from vcrnet.couplings import COUPLINGS
    from vcrnet.train import readings

    coupling = COUPLINGS[config.method](config.coupling())
    return {f"test_{k}": v for k, v in readings(p, coupling, labels).items() if k != "joint_nll"}
