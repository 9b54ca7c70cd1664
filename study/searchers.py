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


def fail_orphans(journal: str, study_name: str) -> int:
    """Mark FAIL the Optuna trials still RUNNING once the study has ended.

    A driver killed mid-study leaves the trials it had asked for but that Tune's last experiment
    checkpoint did not yet know; after ``--resume`` nothing will ever tell them. Called only when
    Tune has finished every trial, so none of them is still training. Returns how many."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    storage = JournalStorage(JournalFileBackend(journal))
    study = optuna.load_study(study_name=study_name, storage=storage)
    orphans = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in orphans:
        storage.set_trial_user_attr(trial._trial_id, "vcr_study", "orphaned by a driver restart")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(orphans)
