"""tracking: everything MLflow, both ways; the only room that imports ``mlflow``.

- ``schema.py``: the run schema, every tag name and value (parent, trial and rerun runs);
- ``uris.py``: tracking URIs (redacted, local paths), their checks, ``open_client`` for reads;
- ``experiment.py``: a study's experiment and parent run (create, view, reopen, close, retire,
  links into the UI);
- ``trials.py``: ``MLflowTracker``, the Tune callback that logs each trial as a child run;
- ``runs.py``: reading back: trial runs, metrics at the best epoch, best per approach;
- ``finals.py``: ``FinalsTracker``, the finals' runs (a finalist's seeds) and their outputs;
- ``reruns.py``: a rerun's seed runs.

``schema``, ``uris``, ``experiment`` and ``runs`` import no Ray and no torch.
"""

from study.lazy import room
from study.tracking import schema  # plain names, no imports: loaded with the room

_SOURCES = {
    **dict.fromkeys(schema.__all__, "schema"),
    "absolute_uri": "uris",
    "check_store": "uris",
    "check_tracking": "uris",
    "is_local": "uris",
    "local_artifacts": "uris",
    "local_store_file": "uris",
    "move_credentials_to_env": "uris",
    "open_client": "uris",
    "redact": "uris",
    "store_exists": "uris",
    "writing_client": "uris",
    "check_name_free": "experiment",
    "close_study": "experiment",
    "create_study": "experiment",
    "log_options": "experiment",
    "reopen_study": "experiment",
    "retire": "experiment",
    "study_links": "experiment",
    "ui_url": "experiment",
    "MLflowTracker": "trials",
    "error_line": "trials",
    "feature_inputs": "trials",
    "FinalsTracker": "finals",
    "MlflowException": "runs",
    "child_runs": "runs",
    "finals_runs": "runs",
    "top_per_approach": "runs",
    "at_best_epoch": "runs",
    "best_of_each": "runs",
    "best_per_approach": "runs",
    "download": "runs",
    "log_report": "runs",
    "metric_histories": "runs",
    "trial_of_run": "runs",
    "trial_runs": "runs",
    "finish_seed_run": "reruns",
    "log_metrics": "reruns",
    "log_submission": "reruns",
    "start_seed_run": "reruns",
}
__all__, __getattr__, __dir__ = room(__name__, _SOURCES)
