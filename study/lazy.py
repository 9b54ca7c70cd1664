"""How a room of ``study/`` shows its public names: listed in its ``__init__`` (``__all__``),
each imported from its module on first use. ``from study.tracking import trial_runs`` then loads
``study/tracking/runs.py`` (MLflow, pandas) and not ``trials.py`` (Ray Tune), so a command that
only reads a study starts without Ray or torch."""

from __future__ import annotations

import importlib


def public(package: str, sources: dict[str, str], name: str):
    """``package``'s public ``name``, from its module ``sources[name]`` (PEP 562)."""
    module = sources.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{package}.{module}"), name)


def room(package: str, sources: dict[str, str]):
    """``(__all__, __getattr__, __dir__)`` of a room whose public names are ``sources`` (name ->
    its module): ``__all__, __getattr__, __dir__ = room(__name__, {...})`` in its ``__init__``."""
    names = sorted(sources)
    return names, lambda name: public(package, sources, name), lambda: names
