"""search: what trials to try. A search space (a small YAML vocabulary, checked whole before
anything starts: ``space.py``), the trial configs it resolves Tune's configs into
(``TrialConfigs``), and the searcher that draws from it (Optuna TPE or random, resumable:
``searcher.py``); the finals' trials, the best configurations re-trained with new seeds
(``finals.py``). Imports vcrnet's config; nothing of MLflow or of the rest of study/."""

from study.lazy import room

_SOURCES = {
    "LABEL": "space",
    "SPACES_DIR": "space",
    "Param": "space",
    "SearchSpace": "space",
    "TrialConfigs": "space",
    "load_space": "space",
    "parse_space": "space",
    "slug": "space",
    "trial_values": "space",
    "FinalConfigs": "finals",
    "final_seeds": "finals",
    "finals_grid": "finals",
    "RestartSafeOptunaSearch": "searcher",
    "every_method_once": "searcher",
    "fail_orphans": "searcher",
    "optuna_searcher": "searcher",
    "startup_trials": "searcher",
    "tpe_sampler": "searcher",
}
__all__, __getattr__, __dir__ = room(__name__, _SOURCES)
