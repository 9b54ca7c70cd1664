"""store: a home on disk. Where every file of a study goes (``paths.py``), a study's record, its
options and its lock (``record.py``), its finals' record (``finals.py``), and the catalog of a
home's studies: list, delete, disk used (``catalog.py``, which reads MLflow through
``study.tracking``). Imports no Ray and no torch."""

from study.lazy import room

_SOURCES = {
    **dict.fromkeys(
        (
            "SYNTHETIC_SEED",
            "artifacts_dir",
            "artifacts_root",
            "check_home",
            "default_cache_dir",
            "default_data_dir",
            "default_tracking_uri",
            "experiment_dir",
            "finals_experiment_dir",
            "finals_path",
            "home",
            "journal_path",
            "log_path",
            "models_dir",
            "record_path",
            "reports_dir",
            "storage_root",
            "studies_root",
            "study_dir",
            "throughput_file",
        ),
        "paths",
    ),
    **dict.fromkeys(
        (
            "LAYOUT",
            "MAX_NAME",
            "SEARCHERS",
            "LaunchOptions",
            "StudyRecord",
            "check_name",
            "check_resumable",
            "is_running",
            "load",
            "names",
            "open_study",
            "running",
            "save",
            "tracking_uri",
        ),
        "record",
    ),
    **dict.fromkeys(("FinalsRecord", "load_finals", "save_finals"), "finals"),
    **dict.fromkeys(
        (
            "Best",
            "StudyRow",
            "delete_study",
            "describe_deletion",
            "disk_bytes",
            "format_table",
            "human_size",
            "study_rows",
        ),
        "catalog",
    ),
}
__all__, __getattr__, __dir__ = room(__name__, _SOURCES)
