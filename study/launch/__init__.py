"""launch: running a study on Ray Tune. The steps top to bottom (``steps.py``: ``launch`` and
``--dry-run``), the checks before anything is written (``preflight.py``), the Tune experiment and
its callbacks (``tuner.py``), the trial on a worker (``trainable.py``), which checkpoints a
study keeps (``retention.py``), what the terminal shows (``progress.py``, ``console.py``), what a
study will cost (``cost.py``) and the measured speed behind it (``throughput.py``); the finals,
the best configurations re-trained with new seeds as trials of the study (``finals.py``)."""

from study.lazy import room

_SOURCES = {
    "run_finals": "finals",
    "dry_run": "steps",
    "launch": "steps",
    "Plan": "cost",
}
__all__, __getattr__, __dir__ = room(__name__, _SOURCES)
