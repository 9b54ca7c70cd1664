"""study: the vcr-study harness, in rooms by concept (``docs/architecture.md`` has the map, the
import rule and the "which room for which change" table).

- ``search/``: what trials to try (spaces, trial configs, the Optuna searcher);
- ``tracking/``: everything MLflow (the only room that imports it);
- ``store/``: a home on disk (paths, a study's record, the catalog of studies);
- ``inputs/``: which data and features a command reads (and extraction on Ray);
- ``reports/``: what a study publishes (ablations, the paper's tables, reruns);
- ``launch/``: running a study on Ray Tune;
- ``cluster.py``: joining Ray; ``api.py``: the public surface; ``cli/``: the shell.

A room imports only rooms below it, through their public names (``__all__``). Importing
``study`` or a room loads nothing heavy: a room's names are imported on first use.
"""
