"""The searcher: Optuna (TPE, or random) behind Ray Tune's OptunaSearch, made safe to resume and
honest about what Tune's scheduler did; its study kept in an Optuna journal file."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from study.search.space import SearchSpace


def optuna_searcher(
    space: SearchSpace,
    *,
    searcher: str,
    seed: int,
    trials: int,
    journal: Path,
    study_name: str,
    metric: str,
    mode: str,
    max_epochs: int,
) -> RestartSafeOptunaSearch:
    """The study's searcher: ``searcher`` (``tpe`` or ``random``, seeded) drawing from
    ``space`` define-by-run, its Optuna study ``study_name`` in the ``journal`` file
    (optuna-dashboard reads it), every method of the space tried first (``every_method_once``)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if searcher == "tpe":
        sampler = tpe_sampler(seed, trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    return RestartSafeOptunaSearch(
        space.suggest,
        metric=metric,
        mode=mode,
        sampler=sampler,
        study_name=study_name,
        storage=JournalStorage(JournalFileBackend(str(journal))),
        first_trials=every_method_once(space, trials),
        max_epochs=max_epochs,
    )


def startup_trials(trials: int) -> int:
    """TPE's random start for a budget of ``trials``: a quarter of it, 3 to 10 (Optuna's own
    default, 10, would leave the default study's 8 trials all random, and spent 10 of 24 trials
    before TPE started in the search-efficiency benchmark, docs/benchmarks.md)."""
    return max(3, min(10, trials // 4))


def tpe_sampler(seed: int, trials: int):
    """Optuna's TPE for a budget of ``trials``. Optuna 5's TPE is multivariate and uses a constant
    liar (for trials running at once) by default; ``group=True`` makes it model each method's own
    parameters (drawn only under that method) jointly too, instead of one at a time."""
    import optuna

    with warnings.catch_warnings():  # Optuna 5 still marks ``group`` experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials(trials), group=True
        )


def every_method_once(space: SearchSpace, trials: int) -> list[dict]:
    """The first trials of a study whose ``method`` is a choice: one per method, in the space's
    order, the rest of each drawn by the sampler (so that every method gets a row in ``best``);
    none where the budget is smaller than the choice."""
    param = space.params.get("method")
    if param is None or param.kind != "choice" or trials < len(param.args):
        return []
    return [{"method": method} for method in param.args]


class RestartSafeOptunaSearch(OptunaSearch):
    """OptunaSearch that survives a driver SIGKILL and ``launch --resume``, and tells Optuna
    each epoch and which trials the scheduler stopped.

    - ``first_trials``: partial params (``{"method": m}``) enqueued when the Optuna study is new
      (no trial in its storage yet), the rest drawn by the sampler; a restart finds them in the
      journal and enqueues nothing.
    - Each epoch's ``metric`` goes to Optuna as an intermediate value at step ``epoch``. A
      finished trial is told the best of them (``best`` ranks trials by their best epoch too).
    - A trial that ASHA stopped before ``max_epochs`` is told PRUNED (TPE ranks those below the
      complete ones, by the step they reached), not COMPLETE with its last, early value. Ray
      gives no flag; its ``TuneController._process_trial_result`` passes the searcher every
      result the scheduler lets a trial go on from, and the result it stops a trial on only to
      ``on_trial_complete``. A trial that ends by itself (its epochs done, or ``fit``'s patience)
      had its last result passed on first and is then ended by Ray's repeat of it. So: a last
      epoch below ``max_epochs`` that Optuna was not yet told is a scheduler's stop. (When both
      fall on one epoch, a patience stop that ASHA also stopped, the scheduler's word counts.)
      ``max_epochs`` None: no trial is told PRUNED.

    Tune restores the searcher from its last experiment checkpoint, which can be older than the
    Optuna journal: a trial that Optuna already holds as finished may be resumed and told again,
    and the journal refuses that (``UpdateFinishedTrialError``, which failed the resumed study).
    So the journal is read first: a finished trial is not told again, a step it holds is not
    reported again.
    """

    max_epochs: int | None = None  # a searcher pickled before it existed reads None

    def __init__(
        self,
        space,
        *,
        first_trials: list[dict] | None = None,
        max_epochs: int | None = None,
        **kwargs,
    ):
        super().__init__(space, **kwargs)
        self.max_epochs = max_epochs
        if first_trials and not self._ot_study.get_trials(deepcopy=False):
            for params in first_trials:
                self._ot_study.enqueue_trial(params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        stored = self._stored(trial_id)
        if stored is not None and not stored.state.is_finished():
            self._report(trial_id, stored, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        stored = self._stored(trial_id)
        if stored is None or stored.state.is_finished() or trial_id in self._completed_trials:
            self._completed_trials.add(trial_id)
            return
        ot_trial = self._ot_trials[trial_id]
        epoch = _epoch(result or {})
        stopped = (
            self.max_epochs is not None
            and epoch is not None
            and epoch < self.max_epochs
            and epoch not in stored.intermediate_values
        )
        if result:
            self._report(trial_id, stored, result)
            stored = self._stored(trial_id)
        values = [v for v in stored.intermediate_values.values() if math.isfinite(v)]
        if error:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        elif stopped or not result:  # no result: removed before it ran (as Ray tells it)
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        elif values:
            self._ot_study.tell(ot_trial, max(values), state=TrialState.COMPLETE)
        else:  # NaN every epoch
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        self._completed_trials.add(trial_id)

    def _stored(self, trial_id: str):
        """The trial as the journal holds it now (None: not a trial of this searcher)."""
        ot_trial = self._ot_trials.get(trial_id)
        return None if ot_trial is None else self._ot_study._storage.get_trial(ot_trial._trial_id)

    def _report(self, trial_id: str, stored, result: dict) -> None:
        epoch, value = _epoch(result), result.get(self.metric)
        if epoch is None or value is None or epoch in stored.intermediate_values:
            return
        ot_trial = self._ot_trials[trial_id]
        ot_trial._cached_frozen_trial.intermediate_values.update(stored.intermediate_values)
        ot_trial.report(float(value), epoch)


def _epoch(result: dict) -> int | None:
    """The result's epoch (1-based; Tune's ``training_iteration`` where none is given)."""
    epoch = result.get("epoch", result.get("training_iteration"))
    return None if epoch is None else int(epoch)


def fail_orphans(journal: str, study_name: str) -> int:
    """Mark FAIL the Optuna trials still RUNNING once the study has ended.

    A driver killed mid-study leaves the trials it had asked for but that Tune's last experiment
    checkpoint did not yet know; after ``--resume`` nothing will ever tell them. Called only when
    Tune has finished every trial, so none of them is still training. Returns how many."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(journal))
    study = optuna.load_study(study_name=study_name, storage=storage)
    orphans = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in orphans:
        storage.set_trial_user_attr(trial._trial_id, "vcr_study", "orphaned by a driver restart")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(orphans)
