"""inputs: which data and which features a command reads. One rule for every command
(``rule.py``: the data folder checked first, the features already extracted reused, the
missing ones extracted once), the features a study or a checkpoint is bound to, and extraction
as a Ray job on a cluster's workers (``extraction.py``)."""

from study.lazy import room

_SOURCES = {
    **dict.fromkeys(
        (
            "Features",
            "data_root",
            "default_settings",
            "for_study",
            "from_checkpoint",
            "model_values",
            "resolve",
        ),
        "rule",
    ),
    **dict.fromkeys(("Workers", "on_ray", "workers_for"), "extraction"),
}
__all__, __getattr__, __dir__ = room(__name__, _SOURCES)
