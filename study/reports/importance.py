"""Parameter importances of a study's settings (Optuna's fANOVA), at equal epochs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.reports.figures import (
    importance_figure,
    importance_title,
    parallel_figure,
    save_figure,
)
from study.reports.tables import at_epoch, values_at, write_table

# Importances over fewer trials than this get a note, not trust: fANOVA fits a random forest to
# the trials, and over 8 of them (the default study) two settings came out 0.50 and 0.49. A rule
# of thumb, not a measurement of the estimate's spread.
MIN_TRIALS_FOR_IMPORTANCE = 10


def importances(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    epochs: list[int],
    params: list[str],
    log_params: set[str],
) -> pd.DataFrame:
    """fANOVA importances of the settings every compared trial uses, per compared epoch, over
    the trials that reached it: epoch, trials, param, importance, note (why not to trust them,
    or why there are none)."""
    rows = []
    for epoch in epochs:
        at = trials.assign(value=trials["trial_id"].map(values_at(curves, epoch)))
        at = at[at["value"].notna()]
        common = [p for p in params if at[p].notna().all() and at[p].nunique() > 1]
        found, problem = _fanova(at, common, log_params)
        note = problem or (
            f"too few trials (under {MIN_TRIALS_FOR_IMPORTANCE}) for importances to mean anything"
            if len(at) < MIN_TRIALS_FOR_IMPORTANCE
            else ""
        )
        rows += [
            {"epoch": epoch, "trials": len(at), "param": p, "importance": v, "note": note}
            for p, v in (found or dict.fromkeys(common or ["(none)"])).items()
        ]
    return pd.DataFrame(rows)


def _fanova(
    at: pd.DataFrame, params: list[str], log_params: set[str]
) -> tuple[dict[str, float], str]:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if len(at) < 3 or not params:
        return {}, f"{len(at)} trials, {len(params)} varying settings: no importances"
    dists = {}
    for p in params:
        numbers = pd.to_numeric(at[p], errors="coerce")
        if numbers.isna().any():
            dists[p] = CategoricalDistribution(sorted(at[p].astype(str).unique()))
        else:
            lo, hi = float(numbers.min()), float(numbers.max())
            dists[p] = FloatDistribution(lo, hi, log=p in log_params and lo > 0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for row in at.to_dict("records"):
        values = {
            p: str(row[p]) if isinstance(dists[p], CategoricalDistribution) else float(row[p])
            for p in params
        }
        study.add_trial(
            optuna.trial.create_trial(params=values, distributions=dists, value=float(row["value"]))
        )
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), ""
    except (RuntimeError, ValueError) as err:  # e.g. every trial the same value
        return {}, f"no importances: {err}"


def write_importances(
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    epochs: list[int],
    params: list[str],
    log_params: set[str],
    out: Path,
) -> list[Path]:
    table = importances(trials, curves, epochs, params, log_params)
    notes = [f"- {importance_title(r)}" for _, r in table.drop_duplicates("epoch").iterrows()]
    caption = (
        "Parameter importances (Optuna's fANOVA) at equal epochs, over the settings "
        "every trial at that epoch uses (a method's own settings: its plot).\n\n" + "\n".join(notes)
    )
    written = write_table(table, out / "importances", caption)
    written += save_figure(importance_figure(table), out / "importances")
    first = epochs[0] if epochs else None
    if first is not None:
        at = trials.assign(**{at_epoch(first): trials["trial_id"].map(values_at(curves, first))})
        at = at[at[at_epoch(first)].notna()]
        if len(at) >= 2:
            written += save_figure(
                parallel_figure(at.reset_index(drop=True), params, first, log_params),
                out / "parallel_coordinates",
            )
    return written
