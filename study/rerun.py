"""``vcr-study rerun``: train a study's winning config to completion with several seeds, then write
the VCR leaderboard CSV for the test split.

Each seed is an MLflow run under the study's parent run, tagged with the trial it re-runs. Every
seed selects its epoch on the dev split (the same carving for all seeds); the validation metrics at
that epoch are summarised over the seeds as mean, standard deviation and a 95% confidence interval
(Student's t), and so are the test split's where its labels are known (the built-in data keeps
them beside test.jsonl; on real VCR only the leaderboard scores test). The CSV comes from the seed
with the best dev Q->AR (not an ensemble, and not chosen on val), is logged as an artifact of that
seed's run and written to ``reports/<name>/submission-<approach>.csv``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from study.spaces import slug
from study.tracking import FINISHED, PARENT_TAG, trial_metrics
from vcrnet.config import TrainConfig
from vcrnet.errors import InputError
from vcrnet.train import OBJECTIVE

TEST_METRICS = ("test_q2a", "test_qa2r", "test_qa2r_pred", "test_q2ar")
SUMMARY_METRICS = (
    "val_q2a",
    "val_qa2r",
    "val_qa2r_pred",
    "val_q2ar",
    "val_qa2r_mixture",
    "val_q2ar_mixture",
    "val_q2ar_joint16",
    "val_q2a_and_joint16",
)
# Student's t, 97.5% quantile, by degrees of freedom (1..30); the normal 1.96 beyond
T_975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


@dataclass
class RerunResult:
    method: str
    source_trial: str
    seeds: list[int]
    best: list[dict]  # per seed: the metrics of its best epoch
    mean: dict[str, float]
    std: dict[str, float]
    interval: dict[str, float]  # half-width of the 95% confidence interval of the mean
    submission: Path
    best_seed: int


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
    client: MlflowClient,
    parent_run_id: str,
    chosen: dict,
    config: TrainConfig,
    features: dict,
    extra: dict,
    out: Path,
    seeds: int,
    epochs: int | None,
    echo=print,
) -> RerunResult:
    from vcrnet.features import CachedVCRDataset
    from vcrnet.leaderboard import write_csv
    from vcrnet.train import BEST, fit, load_model, predict

    experiment_id = client.get_run(parent_run_id).info.experiment_id
    test_set = CachedVCRDataset(features["test"])
    test_labels = _test_labels(extra.get("data"), test_set.annot_ids)
    train_set, val_set = CachedVCRDataset(features["train"]), CachedVCRDataset(features["val"])
    results, folders = [], []
    test_predictions = {}  # seed -> its best checkpoint's test predictions, where scored
    name = slug(chosen.get("approach", config.method))
    for seed in range(seeds):
        seed_config = config.replace(seed=seed, epochs=epochs or config.epochs)
        folder = out / f"{name}-seed{seed}"
        tags = {
            PARENT_TAG: parent_run_id,
            "method": config.method,
            "seed": str(seed),
            "rerun_of": chosen["trial_id"],
            "rerun_of_run": chosen["run_id"],
            "final_status": "RUNNING",
        }
        run = client.create_run(experiment_id, run_name=f"rerun-{name}-seed{seed}", tags=tags)
        run_id = run.info.run_id
        client.log_batch(
            run_id, params=[Param(k, str(v)) for k, v in seed_config.to_dict().items()]
        )

        def log_epoch(metrics: dict, _: Path, run_id=run_id, seed=seed) -> None:
            now = int(time.time() * 1000)
            client.log_batch(
                run_id,
                metrics=[
                    Metric(k, v, now, metrics["epoch"]) for k, v in trial_metrics(metrics).items()
                ],
            )
            echo(
                f"seed {seed} epoch {metrics['epoch']}: dev Q->AR {metrics[OBJECTIVE]:.3f}, "
                f"val Q->AR {metrics['val_q2ar']:.3f}"
            )

        resume = (folder / "checkpoint.pt").is_file()  # an interrupted rerun goes on
        history = fit(
            seed_config, train_set, val_set, folder, resume=resume, on_epoch=log_epoch, extra=extra
        )
        best = max(history, key=lambda m: m[OBJECTIVE])  # chosen on dev, reported on val
        results.append({k: best[k] for k in ("epoch", OBJECTIVE, *SUMMARY_METRICS)})
        if test_labels is not None:  # the built-in data: a test split never selected on
            test_predictions[seed] = predict(load_model(folder / BEST)[0], test_set)
            test = _score_test(test_predictions[seed], test_labels)
            client.log_batch(
                run_id,
                metrics=[
                    Metric(k, v, int(time.time() * 1000), best["epoch"]) for k, v in test.items()
                ],
            )
            results[-1].update(test)
        client.set_tag(run_id, "final_status", "COMPLETED")
        client.set_terminated(run_id, FINISHED)
        folders.append((folder, run_id))
    best_seed = max(range(seeds), key=lambda s: results[s][OBJECTIVE])
    p = test_predictions.get(best_seed)
    if p is None:
        p = predict(load_model(folders[best_seed][0] / BEST)[0], test_set)
    submission = write_csv(
        out.parent / f"submission-{name}.csv", test_set.annot_ids, p.answer_probs, p.rationale_probs
    )
    client.log_artifact(folders[best_seed][1], str(submission))
    keys = [k for k in (*SUMMARY_METRICS, *TEST_METRICS) if k in results[0]]
    mean = {k: statistics.fmean(r[k] for r in results) for k in keys}
    std = {k: statistics.stdev(r[k] for r in results) if seeds > 1 else 0.0 for k in keys}
    t = T_975[seeds - 2] if 2 <= seeds <= len(T_975) + 1 else (1.96 if seeds > 1 else math.nan)
    interval = {k: t * std[k] / math.sqrt(seeds) for k in keys}
    return RerunResult(
        config.method,
        chosen["trial_id"],
        list(range(seeds)),
        results,
        mean,
        std,
        interval,
        Path(submission),
        best_seed,
    )


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


def _score_test(p, labels) -> dict[str, float]:
    """The test metrics of predictions ``p`` (``vcrnet.train.Predictions``)."""
    from vcrnet.leaderboard import score

    return {f"test_{k}": v for k, v in score(p.answer_probs, p.rationale_probs, *labels).items()}
