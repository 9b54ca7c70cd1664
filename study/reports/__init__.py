"""reports: what a study publishes once trials have run. Its ablations (``ablations.py``: tables
read back from MLflow; ``figures.py``: PNG and interactive HTML plots; ``importance.py``:
fANOVA; ``tables.py``: CSV and Markdown), the seed paper's tables beside the study's numbers
(``paper.py``), the rerun of a winning configuration over seeds with the test submission
(``rerun.py``), the finals' finalists, verdict and submission (``finals.py``), and the
statistics of the verdict between approaches (``verdict.py``: paired
bootstrap over questions and seeds, Holm). Reads and writes MLflow through ``study.tracking``."""

from study.lazy import room

_SOURCES = {
    "build_report": "ablations",
    "write_ablations": "ablations",
    "TABLES": "paper",
    "comparable": "paper",
    "rerun_study": "rerun",
    "FinalsReport": "finals",
    "finals_summary": "finals",
    "write_finals": "finals",
    "Comparison": "verdict",
    "compare": "verdict",
    "compare_all": "verdict",
    "write_verdict": "verdict",
    "holm": "verdict",
    "judge": "verdict",
}
__all__, __getattr__, __dir__ = room(__name__, _SOURCES)
