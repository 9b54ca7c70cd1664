"""``vcr-study rerun``: train a study's winning config to completion with several seeds, then write
the VCR leaderboard CSV for the test split.

Each seed is an MLflow run under the study's parent run, tagged with the trial it re-runs. Every
seed selects its epoch on the dev split (the same carving for all seeds); the validation metrics at
that epoch are summarised over the seeds as mean, standard deviation and a 95% confidence interval
(Student's t). The CSV comes from the seed with the best dev Q->AR (not an ensemble, and not chosen
on val), and is logged as an artifact of that seed's run and written to
``reports/<name>/submission-<approach>.csv``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from study.tracking import FINISHED, PARENT_TAG, trial_metrics
from vcrnet.config import TrainConfig
from vcrnet.errors import InputError
from vcrnet.train import OBJECTIVE

SUMMARY_METRICS = ("val_q2a", "val_qa2r", "val_qa2r_pred", "val_q2ar", "val_qa2r_mixture",
                   "val_q2ar_mixture", "val_q2ar_joint16", "val_q2a_and_joint16")
# Student's t, 97.5% quantile, by degrees of freedom (1..10); the normal 1.96 beyond
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


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
    chosen = best[0] if method is None else next(
        (b for b in best if method in (b["approach"], b["method"])), None)
    if chosen is None:
        approaches = ", ".join(b["approach"] for b in best)
        raise InputError(f"--method {method}: no trial of that method or row (the study has "
                         f"{approaches})")
    return chosen, TrainConfig.from_dict(chosen["config"], where="the trial's params")


def rerun(client: MlflowClient, parent_run_id: str, chosen: dict, config: TrainConfig,
          features: dict, extra: dict, out: Path, seeds: int, epochs: int | None,
          echo=print) -> RerunResult:
    from vcrnet.features import CachedVCRDataset
    from vcrnet.leaderboard import write_csv
    from vcrnet.train import BEST, fit, load_model, predict

    experiment_id = client.get_run(parent_run_id).info.experiment_id
    train_set, val_set = CachedVCRDataset(features["train"]), CachedVCRDataset(features["val"])
    results, folders = [], []
    slug = chosen.get("approach", config.method).replace(" ", "-").replace(":", "-")
    for seed in range(seeds):
        seed_config = config.replace(seed=seed, epochs=epochs or config.epochs)
        folder = out / f"{slug}-seed{seed}"
        tags = {PARENT_TAG: parent_run_id, "method": config.method, "seed": str(seed),
                "rerun_of": chosen["trial_id"], "rerun_of_run": chosen["run_id"],
                "final_status": "RUNNING"}
        run = client.create_run(experiment_id, run_name=f"rerun-{slug}-seed{seed}", tags=tags)
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, str(v))
                                         for k, v in seed_config.to_dict().items()])

        def log_epoch(metrics: dict, _: Path, run_id=run_id, seed=seed) -> None:
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, now, metrics["epoch"])
                                              for k, v in trial_metrics(metrics).items()])
            echo(f"seed {seed} epoch {metrics['epoch']}: dev Q->AR {metrics[OBJECTIVE]:.3f}, "
                 f"val Q->AR {metrics['val_q2ar']:.3f}")

        resume = (folder / "checkpoint.pt").is_file()  # an interrupted rerun goes on
        history = fit(seed_config, train_set, val_set, folder, resume=resume,
                      on_epoch=log_epoch, extra=extra)
        best = max(history, key=lambda m: m[OBJECTIVE])  # chosen on dev, reported on val
        results.append({k: best[k] for k in ("epoch", OBJECTIVE, *SUMMARY_METRICS)})
        client.set_tag(run_id, "final_status", "COMPLETED")
        client.set_terminated(run_id, FINISHED)
        folders.append((folder, run_id))
    best_seed = max(range(seeds), key=lambda s: results[s][OBJECTIVE])
    model, _, _ = load_model(folders[best_seed][0] / BEST)
    test_set = CachedVCRDataset(features["test"])
    p = predict(model, test_set)
    submission = write_csv(out.parent / f"submission-{slug}.csv", test_set.annot_ids,
                           p.answer_probs, p.rationale_probs)
    client.log_artifact(folders[best_seed][1], str(submission))
    mean = {k: statistics.fmean(r[k] for r in results) for k in SUMMARY_METRICS}
    std = {k: statistics.stdev(r[k] for r in results) if seeds > 1 else 0.0
           for k in SUMMARY_METRICS}
    t = T_975[seeds - 2] if 2 <= seeds <= len(T_975) + 1 else (1.96 if seeds > 1 else math.nan)
    interval = {k: t * std[k] / math.sqrt(seeds) for k in SUMMARY_METRICS}
    return RerunResult(config.method, chosen["trial_id"], list(range(seeds)), results, mean, std,
                       interval, Path(submission), best_seed)
