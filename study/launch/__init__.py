"""launch: running a study on Ray Tune. The steps top to bottom (``steps.py``: ``launch`` and
``--dry-run``), the checks before anything is written (``preflight.py``), the Tune experiment and
its callbacks (``tuner.py``), the trial on a worker (``trainable.py``), which checkpoints a
study keeps (``retention.py``), what the terminal shows (``progress.py``, ``console.py``), what a
study will cost (``cost.py``) and the measured speed behind it (``throughput.py``)."""

from study.lazy import public

_SOURCES = {
    "dry_run": "steps",
    "launch": "steps",
    "Plan": "cost",
}
__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    return public(__name__, _SOURCES, name)


def __dir__() -> list[str]:
    return __all__
