"""The finals' trials: each approach's best configurations of the search, re-trained with seeds
the search never used.

A finals trial's Tune config is one grid row, ``{"grid": entry}``, an entry a plain dict:

- ``approach``: the row it makes in the verdict (the search trial's method or grid label), and
  ``method``, its coupling method;
- ``of_trial``, ``of_run``: the search trial it re-trains and that trial's MLflow run;
- ``rank``: its place among the approach's configurations on dev (1 = the best);
- ``seed``: the seed it trains with (``final_seeds``: never the search's own);
- ``config``: its whole ``TrainConfig`` as a dict (seed and epochs set).

A finals trial needs nothing else (no space, no overrides): ``FinalConfigs`` turns an entry
back into its TrainConfig, as ``TrialConfigs`` does for a search trial.
"""

from __future__ import annotations

from study.search.space import trial_values
from vcrnet.config import TrainConfig

ENTRY_KEYS = ("approach", "method", "of_trial", "of_run", "rank", "seed", "config")


def final_seeds(seeds: int, used: int = 0) -> list[int]:
    """``seeds`` seeds for the finals: 1, 2, ... skipping ``used``, the seed the search trained
    the configuration with (its selected draw must not enter the finals' mean: the winner's
    curse)."""
    return [s for s in range(seeds + 1) if s != used][:seeds]


def finals_grid(finalists: list[dict], seeds: int, epochs: int | None) -> list[dict]:
    """The finals' entries: for each finalist (a ``best_per_approach``-like row: ``approach``,
    ``trial_id``, ``run_id``, ``rank``, ``config`` as MLflow params), ``seeds`` new seeds, each
    trained ``epochs`` epochs (None: the trial's own)."""
    entries = []
    for finalist in finalists:
        where = f"trial {finalist['trial_id']}'s params"
        config = TrainConfig.from_dict(finalist["config"], where=where)
        for seed in final_seeds(seeds, config.seed):
            trained = config.replace(seed=seed, epochs=epochs or config.epochs)
            entries.append(
                {
                    "approach": finalist["approach"],
                    "method": trained.method,
                    "of_trial": finalist["trial_id"],
                    "of_run": finalist["run_id"],
                    "rank": int(finalist.get("rank", 1)),
                    "seed": seed,
                    "config": trained.to_dict(),
                }
            )
    return entries


class FinalConfigs:
    """A finals trial's Tune config -> its TrainConfig (the interface of ``TrialConfigs``)."""

    @staticmethod
    def entry(tune_config: dict) -> dict:
        return trial_values(tune_config)

    def config(self, tune_config: dict) -> TrainConfig:
        return TrainConfig.from_dict(self.entry(tune_config)["config"], where="a finals entry")

    def params(self, tune_config: dict) -> dict:
        return self.config(tune_config).to_dict()

    def approach(self, tune_config: dict) -> str:
        return self.entry(tune_config)["approach"]
