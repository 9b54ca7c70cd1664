"""Search efficiency: trial-epochs that Optuna TPE with ASHA needs to reach the best validation
Q->AR that random search without early stopping finds, over several seeds.

    VCR_STUDY_HOME=/tmp/bench-search .venv/bin/python -m benchmarks.search_efficiency
    # the same TPE studies against a random search with as many trials as TPE's:
    VCR_STUDY_HOME=/tmp/bench-search .venv/bin/python -m benchmarks.search_efficiency \
        --random-trials 24 --random-label=24

For each seed: a random-search study (``--searcher random --no-asha``, ``--random-trials`` trials,
every one trained ``--epochs`` epochs, the ``joint`` space's own 8 by default; the trainer's own
early stopping still applies), then a TPE + ASHA study (``--tpe-trials`` trials, same epochs at
most) on the ``joint`` space. Every reported epoch of every trial is one trial-epoch, ordered by
the time MLflow received it (two trials run at once). The target is random search's final best
val Q->AR; the figure is the trial-epochs TPE + ASHA had spent when one of its epochs first
reached it, against random search's total. A smaller synthetic dataset (``--train``, ``--val``
questions) keeps a seed near 20 minutes on 2 CPUs. Studies already in the home are reused, not
rerun: ``--label`` and ``--random-label`` name new ones.

``--stopped-as`` says how the TPE studies tell Optuna about a trial ASHA stopped early: ``pruned``
(what ``vcr-study launch`` does) or ``complete`` (COMPLETE with the best of its epochs' values,
as before for a trial stopped after 1 epoch: TPE takes a 1-epoch score for a final one);
``--stopped-as pruned complete`` runs both on the same seeds against the same random search:

    VCR_STUDY_HOME=/tmp/bench-search .venv/bin/python -m benchmarks.search_efficiency \
        --stopped-as pruned complete --out docs/measurements/search_efficiency_pruned.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from unittest import mock

import pandas as pd
from mlflow.tracking import MlflowClient

from study import search, store, tracking
from study.launch import launch
from study.search import RestartSafeOptunaSearch
from study.store import LaunchOptions
from vcrnet.data.synth import write_synthetic
from vcrnet.metrics import OBJECTIVE


def trials_in_order(client: MlflowClient, name: str) -> list[list[tuple[int, float]]]:
    """Every trial of study ``name`` as its (time logged, val Q->AR) points by epoch, trials in
    the order they started."""
    runs = tracking.trial_runs(client, store.load(name).parent_run_id)
    trials = []
    for run_id in runs["run_id"]:
        history = sorted(client.get_metric_history(run_id, OBJECTIVE), key=lambda m: m.step)
        trials.append(
            (client.get_run(run_id).info.start_time, [(m.timestamp, m.value) for m in history])
        )
    return [points for _, points in sorted(trials)]


def epochs_in_order(trials: list[list[tuple[int, float]]]) -> list[float]:
    """Every val Q->AR point of every trial, in the order they were logged."""
    return [value for _, value in sorted(point for points in trials for point in points)]


def first_rung_signal(trials: list[list[tuple[int, float]]]) -> float:
    """How well a trial's val Q->AR after its first epoch (ASHA's first rung) ranks the trials by
    their best val Q->AR: Spearman's rank correlation, 1 = perfectly."""
    first = pd.Series([points[0][1] for points in trials])
    best = pd.Series([max(v for _, v in points) for points in trials])
    return float(first.rank().corr(best.rank()))


def how_reached(trials: list[list[tuple[int, float]]], target: float) -> dict:
    """Which TPE + ASHA trial (1 = the first started) logged the first epoch at ``target``, and
    how many of its trials ran how many epochs."""
    hits = [(t, i + 1) for i, points in enumerate(trials) for t, v in points if v >= target]
    lengths = [len(points) for points in trials]
    return {
        "tpe_first_trial_at_target": min(hits)[1] if hits else None,
        "tpe_trials_by_epochs_run": {n: lengths.count(n) for n in sorted(set(lengths))},
    }


def tpe_settings(trials: int) -> dict:
    sampler = search.tpe_sampler(0, trials)
    return {
        "n_startup_trials": sampler._n_startup_trials,
        "group": sampler._group,
        "multivariate": sampler._multivariate is not False,
        "constant_liar": sampler._constant_liar,
    }


def stopped_as_complete():
    """Within it, launch's searcher tells Optuna every trial as COMPLETE, as it did before
    stopped trials were PRUNED (``max_epochs`` None turns that off: ``RestartSafeOptunaSearch``).
    The searcher runs in this process, the driver, so the patch reaches it."""
    init = RestartSafeOptunaSearch.__init__

    def without_max_epochs(self, space, **kwargs):
        init(self, space, **{**kwargs, "max_epochs": None})

    return mock.patch.object(RestartSafeOptunaSearch, "__init__", without_max_epochs)


def run_study(
    name: str,
    data: Path,
    searcher: str,
    asha: bool,
    trials: int,
    epochs: int,
    seed: int,
    stopped_as: str = "pruned",
) -> tuple[list[list[tuple[int, float]]], int | None]:
    """Run study ``name`` unless the home has it already; its trials (``trials_in_order``), and
    its wall time in seconds (None for a study run earlier)."""
    options = LaunchOptions(
        name=name,
        space="joint",
        trials=trials,
        searcher=searcher,
        asha=asha,
        seed=seed,
        overrides={"epochs": epochs},
        data=str(data),
        concurrent=2,
        cpus_per_trial=1,
    )
    wall = None
    if not store.study_dir(name).exists():
        start = time.perf_counter()
        patch = stopped_as_complete() if stopped_as == "complete" else contextlib.nullcontext()
        with patch:
            launch(options)
        wall = round(time.perf_counter() - start)
    return trials_in_order(MlflowClient(store.tracking_uri(options)), name), wall


def optuna_states(name: str) -> dict:
    """How the Optuna journal of study ``name`` holds its trials: {state: count}."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(store.journal_path(name))))
    states = [t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials]
    return {state: states.count(state) for state in sorted(set(states))}


def compare(random_study: list, tpe_study: list) -> dict:
    """One seed's figures: random search's best as the target, and what TPE + ASHA spent to
    reach it."""
    random_q2ar, tpe_q2ar = epochs_in_order(random_study), epochs_in_order(tpe_study)
    target = max(random_q2ar)
    reached = next((i + 1 for i, v in enumerate(tpe_q2ar) if v >= target), None)
    return {
        f"target_{OBJECTIVE}": round(target, 4),
        "random_trial_epochs": len(random_q2ar),
        "random_epochs_to_its_best": random_q2ar.index(target) + 1,
        "random_first_rung_spearman": round(first_rung_signal(random_study), 2),
        "tpe_asha_trial_epochs": len(tpe_q2ar),
        f"tpe_asha_best_{OBJECTIVE}": round(max(tpe_q2ar), 4),
        "tpe_asha_epochs_to_target": reached,
        "ratio": round(reached / len(random_q2ar), 3) if reached else None,
        **how_reached(tpe_study, target),
    }


def summarise(rows: list[dict]) -> dict:
    """Over the seeds: how many reached the target, the mean ratio where they did, the mean of
    TPE + ASHA's own best and the trial-epochs it spent."""
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    best = [r[f"tpe_asha_best_{OBJECTIVE}"] for r in rows]
    return {
        "seeds_run": len(rows),
        "reached": len(ratios),
        "mean_ratio_where_reached": round(sum(ratios) / max(1, len(ratios)), 3),
        f"mean_tpe_asha_best_{OBJECTIVE}": round(sum(best) / max(1, len(best)), 4),
        "mean_tpe_asha_trial_epochs": round(
            sum(r["tpe_asha_trial_epochs"] for r in rows) / max(1, len(rows)), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random-trials", type=int, default=10)
    parser.add_argument("--tpe-trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument(
        "--label",
        default="",
        help="appended to the TPE studies' names, to rerun them after a change",
    )
    parser.add_argument(
        "--random-label",
        default="",
        help="appended to the random studies' names, e.g. for another trial count",
    )
    parser.add_argument(
        "--random-only",
        action="store_true",
        help="run only the random-search studies (they do not depend on TPE's "
        "settings), to start them while those are decided",
    )
    parser.add_argument(
        "--stopped-as",
        nargs="+",
        choices=("pruned", "complete"),
        default=["pruned"],
        help="how the TPE studies tell Optuna about a trial ASHA stopped (both: a TPE study "
        "of each per seed)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="default: docs/measurements/search_efficiency_e<epochs>_random<random trials>.json",
    )
    args = parser.parse_args()
    args.out = args.out or Path(
        f"docs/measurements/search_efficiency_e{args.epochs}_random{args.random_trials}.json"
    )

    data = store.home() / f"data-{args.train}-{args.val}"
    if not data.exists():
        write_synthetic(data, seed=7, sizes={"train": args.train, "val": args.val, "test": 20})
    rows = []
    for seed in range(args.seeds):
        random_name = f"eff-random{args.random_label}-{seed}"
        random_study, random_wall = run_study(
            random_name, data, "random", False, args.random_trials, args.epochs, seed
        )
        if args.random_only:
            continue
        for stopped_as in args.stopped_as:
            suffix = "" if stopped_as == "pruned" else "-complete"
            tpe_name = f"eff-tpe{suffix}{args.label}-{seed}"
            tpe_study, tpe_wall = run_study(
                tpe_name, data, "tpe", True, args.tpe_trials, args.epochs, seed, stopped_as
            )
            row = {"seed": seed, "stopped_as": stopped_as}
            row.update(compare(random_study, tpe_study), optuna_states=optuna_states(tpe_name))
            row.update(random_wall_s=random_wall, tpe_asha_wall_s=tpe_wall)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "space": "joint",
        **vars(args),
        "tpe_startup_trials": search.startup_trials(args.tpe_trials),
        "tpe_sampler": tpe_settings(args.tpe_trials),
        "rows": rows,
        "by_stopped_as": {
            arm: summarise([r for r in rows if r["stopped_as"] == arm]) for arm in args.stopped_as
        },
    }
    summary["out"] = str(summary["out"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
