"""Ray Tune's OptunaSearch, made safe to resume after the driver was killed."""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class RestartSafeOptunaSearch(OptunaSearch):
    """OptunaSearch that survives a driver SIGKILL and ``launch --resume``.

    Tune restores the searcher from its last experiment checkpoint, which can be older than the
    Optuna journal: a trial that Optuna already holds as finished may be resumed and told again,
    and the journal refuses that (``UpdateFinishedTrialError``, which failed the resumed study).
    So a trial the journal holds as finished is not told twice, and intermediate values are not
    sent: with no Optuna pruner inside Ray Tune nothing reads them (ASHA does the stopping).
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            stored = self._ot_study._storage.get_trial(ot_trial._trial_id)
            if stored.state.is_finished():
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)
