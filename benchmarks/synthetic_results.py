"""docs/results.md: every approach of the paper's grid on the built-in data, several seeds.

Each (approach, seed) is one ``vcrnet.train.fit`` run on the built-in synthetic data (selected on
its dev split, carved off train; reported on val, never selected on). From each run's best
checkpoint (best on dev) it also measures the rationale module given a uniformly drawn *wrong*
answer, and every metric on the ``team`` questions alone (the question type where the right
rationale can only be picked through the answer, ``vcrnet.data.synth``). Runs already finished in
``--out`` are reused, so an interrupted benchmark goes on where it stopped.

    python -m benchmarks.synthetic_results --seeds 0 1 2 --epochs 6 \\
        --out /tmp/results --json docs/measurements/synthetic_results.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from study.inputs import resolve
from vcrnet.config import TrainConfig
from vcrnet.data import read_split
from vcrnet.data.synth import TEAMS
from vcrnet.features import CachedVCRDataset, FeatureChoice
from vcrnet.leaderboard import score
from vcrnet.train import BEST, METRICS, OBJECTIVE, fit, load_model, predict

# docs/results.md's settings; a plain shuffle (bucket_batches 0), as paper.yaml
COMMON = {"preset": "small", "lr": 1e-3, "batch_size": 16, "bucket_batches": 0}
APPROACHES = {  # the paper's rows (search_spaces/paper.yaml), and the text-only ablation; each
    # selected on the reading the paper reports for it (its objective), as paper.yaml
    "R2C": {"method": "teacher", "correct_answer_rate": 1.0},
    "new baseline": {"method": "teacher", "correct_answer_rate": 0.75},
    "direct cross entropy": {
        "method": "direct16",
        "direct16_variant": "separate",
        "loss_ratio": 4.0,
        "objective": "dev_q2ar_joint16",
    },
    "RL sampling": {"method": "reinforce", "num_samples": 64, "estimator": "expectation"},
    "softmax": {"method": "softmax", "objective": "dev_q2ar_mixture"},
    "Gumbel softmax": {
        "method": "gumbel",
        "tau_start": 5.0,
        "tau_end": 1.0,
        "objective": "dev_q2ar_mixture",
    },
    "text only (softmax, objects zeroed)": {"method": "softmax", "zero_object_features": True},
}
SHOWN = (
    "val_q2a",
    "val_qa2r",
    "val_qa2r_pred",
    "val_q2ar",
    "val_qa2r_mixture",
    "val_q2ar_mixture",
    "val_q2ar_joint16",
    "qa2r_wrong",
    "team_q2a",
    "team_qa2r",
    "team_qa2r_wrong",
    "team_q2ar",
)


def run(
    label: str,
    seed: int,
    epochs: int,
    out: Path,
    train: CachedVCRDataset,
    val: CachedVCRDataset,
    team: torch.Tensor,
    bucket_batches: int = 0,
) -> dict:
    values = {**COMMON, **APPROACHES[label], "epochs": epochs, "seed": seed}
    values["bucket_batches"] = bucket_batches
    if values["method"] == "gumbel":
        values["anneal_epochs"] = max(1, epochs - 2)  # reach tau_end, then hold it 2 epochs
    config = TrainConfig.from_dict(values)
    buckets = f"-buckets{bucket_batches}" if bucket_batches else ""
    folder = out / f"{label.split(' (')[0].replace(' ', '-')}{buckets}-seed{seed}"
    if (
        not (folder / METRICS).is_file()
        or len((folder / METRICS).read_text().splitlines()) < epochs
    ):
        fit(config, train, val, folder, resume=(folder / "checkpoint.pt").is_file())
    history = [json.loads(line) for line in (folder / METRICS).read_text().splitlines()]
    best = max(history, key=lambda m: m[config.objective])  # the first best, as fit keeps it
    return {
        "approach": label,
        "seed": seed,
        "bucket_batches": bucket_batches,
        "objective": config.objective,
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        # training and evaluation, from the run's own record (also for a run reused from --out)
        "seconds": round(sum(m["epoch_seconds"] for m in history), 1),
        "dev_selected": best[config.objective],
        "val_selected": best["val_" + config.objective.removeprefix("dev_")],
        OBJECTIVE: best[OBJECTIVE],
        **{k: best[k] for k in SHOWN if k in best},
        **ablations(folder / BEST, val, team),
    }


def ablations(checkpoint: Path, val: CachedVCRDataset, team: torch.Tensor) -> dict:
    """The rationale module given a wrong answer, and the ``team`` questions (``team [N]``
    bool) alone."""
    model, _, _ = load_model(checkpoint)
    p = predict(model, val)
    a, r = p.answer_labels, p.rationale_labels
    wrong = (a + torch.randint(1, 4, a.shape, generator=torch.Generator().manual_seed(0))) % 4
    given_wrong = p.rationale_probs[torch.arange(len(a)), wrong].argmax(-1) == r
    on_team = score(p.answer_probs[team], p.rationale_probs[team], a[team], r[team])
    # each val question's leaderboard Q->AR, right (1) or not (0), in val's order: what a
    # verdict between approaches resamples (study.reports.verdict)
    right = (p.answer_probs.argmax(-1) == a) & (
        p.rationale_probs[torch.arange(len(a)), a].argmax(-1) == r
    )
    return {
        "val_q2ar_right": "".join("1" if x else "0" for x in right.tolist()),
        "qa2r_wrong": given_wrong.float().mean().item(),
        "team_q2a": on_team["q2a"],
        "team_qa2r": on_team["qa2r"],
        "team_qa2r_wrong": given_wrong[team].float().mean().item(),
        "team_q2ar": on_team["q2ar"],
        "team_questions": int(team.sum()),
    }


def team_questions(data: Path, val: CachedVCRDataset) -> torch.Tensor:
    """``[N]`` bool: which val questions are of the ``team`` type (their answers name teams)."""
    is_team = {
        item.annot_id: all(
            any(w in TEAMS for w in answer if isinstance(w, str)) for answer in item.answer_choices
        )
        for item in read_split(data, "val")
    }
    return torch.tensor([is_team[i] for i in val.annot_ids])


TABLE = (
    ("dev_selected", "dev, selected on"),
    ("val_selected", "val, the same reading"),
    ("val_q2a", "Q->A"),
    ("val_qa2r", "QA->R gold"),
    ("val_qa2r_pred", "QA->R pred"),
    ("val_q2ar", "Q->AR"),
    ("qa2r_wrong", "QA->R given a wrong answer"),
    ("team_q2a", "team: Q->A"),
    ("team_qa2r", "team: QA->R gold"),
    ("team_qa2r_wrong", "team: QA->R wrong"),
    ("team_q2ar", "team: Q->AR"),
)


def summary(rows: list[dict]) -> list[str]:
    """docs/results.md's table: mean ± std over the seeds of each approach."""
    lines = [
        "| approach | selected on | seeds | best epoch (dev) | "
        + " | ".join(c for _, c in TABLE)
        + " |",
        "|---|---|---|---|" + "---|" * len(TABLE),
    ]
    for label in dict.fromkeys(r["approach"] for r in rows):
        mine = [r for r in rows if r["approach"] == label]
        objective = mine[0].get("objective", OBJECTIVE)
        cells = []
        for key, _ in TABLE:
            values = [r[key] for r in mine]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.fmean(values):.3f}{spread}")
        epochs = "/".join(str(r["best_epoch"]) for r in mine)
        lines.append(
            f"| {label} | `{objective}` | {len(mine)} | {epochs} | " + " | ".join(cells) + " |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--approaches", nargs="+", default=list(APPROACHES))
    parser.add_argument("--text-only-seeds", type=int, default=1)
    parser.add_argument("--out", type=Path, help="run folders (reused)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--feature-storage", default=None, help="float16 (default) or int8")
    parser.add_argument("--table", type=Path, help="only print the table of this JSON")
    parser.add_argument(
        "--bucket-batches", type=int, default=0, help="0: a plain shuffle; > 1: noisy buckets"
    )
    args = parser.parse_args()
    if args.table:
        print("\n".join(summary(json.loads(args.table.read_text())["runs"])))
        return
    if args.out is None:
        parser.error("--out is required")
    started = time.perf_counter()
    found = resolve(None, None, FeatureChoice(storage=args.feature_storage), ("train", "val"))
    train, val = (CachedVCRDataset(found.splits[s]) for s in ("train", "val"))
    team = team_questions(found.data, val)
    rows = []
    for label in args.approaches:
        seeds = args.seeds[: args.text_only_seeds] if label.startswith("text only") else args.seeds
        for seed in seeds:
            rows.append(
                run(label, seed, args.epochs, args.out, train, val, team, args.bucket_batches)
            )
            print(json.dumps(rows[-1]), flush=True)
    print("\n".join(summary(rows)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "epochs": args.epochs,
                    "common": {**COMMON, "bucket_batches": args.bucket_batches},
                    "approaches": APPROACHES,
                    "runs": rows,
                    # this invocation's (runs reused from --out cost it nothing: their own
                    # seconds are in "runs")
                    "wall_seconds": round(time.perf_counter() - started, 1),
                    "peak_rss_gib": round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
                    ),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
