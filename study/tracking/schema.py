"""The MLflow run schema of a study: every tag name and value vcr-study writes and reads, once.

A study is one MLflow experiment (named like the study), holding:

- the experiment, tagged ``STUDY_EXPERIMENT`` and ``EXPERIMENT_KIND``, with the runs table a
  link opens on (``SHARED_VIEW_TAG`` + ``VIEW_KEY``);
- one **parent run** (tag ``STUDY_ROLE`` = ``PARENT``), the study's own: its description
  (``NOTE``), its options as params, its space file, and at the end its ablations
  (``ablations/``);
- one **trial run** per Ray Tune trial, a child of the parent (``PARENT_TAG``), tagged
  ``TRIAL_ID`` (Tune's trial id: MLflow is the record of which run is which trial), ``METHOD``,
  ``LABEL`` (a labelled grid row's name; absent otherwise), ``FINAL_STATUS`` (RUNNING,
  COMPLETED, STOPPED_EARLY, FAILED or KILLED), ``NODE_ID``, ``RETRIES`` and, for a failed
  trial, ``ERROR``; the best epoch's weights as the artifact ``MODEL_ARTIFACT`` where
  ``MODEL_TAG`` is set; the feature cache entries as dataset inputs (``DATA_CONTEXT``);
- one **finals run** per seed of each finalist of ``vcr-study finals`` (a Tune trial of the
  study's finals experiment, logged as a trial is, ``TRIAL_ID`` its finals trial's id), tagged
  ``STAGE`` = ``FINALS``, ``FINALS_OF`` (the search trial it re-trains) and ``FINALS_OF_RUN``
  (that trial's run), ``SEED`` and ``LABEL`` (its approach); at its end its best epoch's weights
  (``MODEL_ARTIFACT``) and its val and test predictions as leaderboard CSVs
  (``VAL_PREDICTIONS``, ``TEST_PREDICTIONS``), which the verdict reads question by question;
- one **rerun run** per seed of ``vcr-study rerun``, a child of the parent without ``TRIAL_ID``,
  tagged ``RERUN_OF`` (the trial id) and ``RERUN_OF_RUN`` (its run), ``SEED``, ``METHOD`` and
  ``FINAL_STATUS``.

Metrics are logged once per epoch (step = epoch); ``best_<objective>`` is a trial's best so far.
"""

from __future__ import annotations

import re

__all__ = [
    "COMPLETED",
    "DATA_CONTEXT",
    "EXPERIMENT_KIND",
    "FAILED_RUN",
    "NOTE",
    "SHARED_VIEW_TAG",
    "STUDY_EXPERIMENT",
    "VIEW_KEY",
    "ERROR",
    "FAILED",
    "FINAL_STATUS",
    "FINALS",
    "FINALS_OF",
    "FINALS_OF_RUN",
    "FINISHED",
    "KILLED",
    "LABEL",
    "METHOD",
    "MODEL_ARTIFACT",
    "MODEL_TAG",
    "NODE_ID",
    "PARENT",
    "PARENT_TAG",
    "RERUN_OF",
    "RERUN_OF_RUN",
    "RETRIES",
    "RUNNING",
    "SEED",
    "STAGE",
    "STOPPED_EARLY",
    "STUDY_ROLE",
    "TEST_PREDICTIONS",
    "TEST_SCORES",
    "TRIAL_ID",
    "VAL_PREDICTIONS",
    "best_metric",
    "is_model_ref",
    "model_uri",
    "parse_model_ref",
    "trial_metrics",
]

# --- tags ----------------------------------------------------------------------------------------
STUDY_EXPERIMENT = {"vcr_study": "1"}  # an experiment vcr-study made
# The experiment's kind as MLflow's UI writes it ("genai_development" is the other; the
# ExperimentKind enum of MLflow 3.17's JS bundle): model training. MLflow 3.17's UI itself picks
# its pages by its sidebar switch (the URL's ``workflowType``, else the browser's last choice,
# else GenAI): a link to a study carries the switch too (``experiment.ui_url``).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The runs table a study's link opens on (``experiment.share_view``): what MLflow's Share button
# saves, read when a link carries ``viewStateShareKey=<VIEW_KEY>``
SHARED_VIEW_TAG, VIEW_KEY = "mlflow.sharedViewState.", "vcr-study"
NOTE = "mlflow.note.content"  # MLflow's own: a run's description
DATA_CONTEXT = "mlflow.data.context"  # MLflow's own: a dataset input's split
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: a child run's parent
STUDY_ROLE, PARENT = "study_role", "parent"  # the study's parent run
TRIAL_ID = "trial_id"  # a trial run: Ray Tune's trial id
METHOD = "method"  # the coupling method (vcrnet.couplings)
LABEL = "label"  # a labelled grid row's name (the space's ``label`` key)
FINAL_STATUS = "final_status"  # what became of the trial (the values below)
NODE_ID = "node_id"  # the Ray node a trial last reported from
RETRIES = "retries"  # how often Tune restarted the trial from its checkpoint
ERROR = "error"  # a failed trial's error line
RERUN_OF, RERUN_OF_RUN, SEED = "rerun_of", "rerun_of_run", "seed"  # a rerun seed's run
MODEL_ARTIFACT = "model/best.pt"  # a trial's best epoch's weights (``vcrnet.train.BEST``)
MODEL_TAG = "best_model"  # on a trial run that has them: the artifact's path in the run
STAGE, FINALS = "stage", "finals"  # a finals run (search trials have no STAGE tag)
FINALS_OF, FINALS_OF_RUN = "finals_of", "finals_of_run"  # the search trial a finals run re-trains
# a finals run's predictions at its best epoch on dev, as leaderboard CSVs (``vcrnet.leaderboard``)
VAL_PREDICTIONS, TEST_PREDICTIONS = "predictions/val.csv", "predictions/test.csv"
TEST_SCORES = "predictions/test_scores.json"  # beside them, where test labels are known

# --- FINAL_STATUS values -------------------------------------------------------------------------
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"  # ran its epochs (or stopped by its own patience at the last)
STOPPED_EARLY = "STOPPED_EARLY"  # stopped before its last epoch (ASHA, or patience)
FAILED = "FAILED"  # raised, retries spent
KILLED = "KILLED"  # still running when its study ended (a driver stopped)

# --- MLflow run statuses (``mlflow.entities.RunStatus`` names; RUNNING and KILLED as above) ------
FINISHED = "FINISHED"
FAILED_RUN = "FAILED"

RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow's run ids: uuid4().hex


METRIC_PREFIXES = ("train_", "dev_", "val_", "system/")  # system/: MLflow's system-metric names
METRIC_KEYS = ("lr", "tau", "epoch_seconds")  # besides the prefixed ones


def trial_metrics(result: dict) -> dict[str, float]:
    """The per-epoch metrics of a Tune result (not Ray's own bookkeeping)."""
    return {
        k: float(v)
        for k, v in result.items()
        if (k.startswith(METRIC_PREFIXES) or k in METRIC_KEYS)
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    }


def best_metric(metric: str) -> str:
    """The metric a trial run keeps its best value so far of ``metric`` under."""
    return f"best_{metric}"


def is_model_ref(text: str) -> bool:
    """Whether ``text`` names an MLflow run's artifact: a run id or a ``runs:/`` URI."""
    return text.startswith("runs:/") or RUN_ID.fullmatch(text) is not None


def parse_model_ref(ref: str) -> tuple[str, str]:
    """``(run id, artifact path)`` of a run id (its ``MODEL_ARTIFACT``) or a ``runs:/`` URI;
    anything else, or a path that leaves the run's artifacts (``..``), is an ``InputError``."""
    from vcrnet.errors import InputError

    if RUN_ID.fullmatch(ref):
        return ref, MODEL_ARTIFACT
    run_id, _, path = ref.removeprefix("runs:/").partition("/")
    if not ref.startswith("runs:/") or not RUN_ID.fullmatch(run_id) or not path:
        raise InputError(f"{ref}: not a run id or a runs:/<run id>/<path> URI")
    if path.startswith("/") or ".." in path.split("/"):
        raise InputError(f"{ref}: the path must stay inside the run's artifacts (no '..')")
    return run_id, path


def model_uri(run_id: str) -> str:
    """Where a trial run's best weights are, as MLflow names artifacts: ``runs:/<id>/<path>``
    (``vcr-study predict --checkpoint`` takes it)."""
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"
