"""A study's finals record (``studies/<name>/finals.json``): what ``vcr-study finals`` was asked
for (seeds, configurations per approach, epochs, concurrency, resources) and the finals' trials
it made (``study.search.finals_grid``), written once every check has passed and before the first
trial starts; ``finals --resume`` goes on with it, the verdict reads it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from study.store import paths
from vcrnet.atomic import write_text
from vcrnet.errors import InputError


@dataclass(frozen=True)
class FinalsRecord:
    top: int = 1  # configurations per approach, best first on dev
    seeds: int = 3  # seeds per configuration (never the search's own)
    epochs: int | None = None  # None: each trial's own
    concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    method: str | None = None  # only this approach (a method or a grid row's label)
    run: str | None = None  # only the search trial of this MLflow run (a run id or runs:/ URI)
    entries: list = field(default_factory=list)  # the finals' trials (finals_grid)

    def check(self) -> None:
        """Every option in its range: one line naming it."""
        if self.method and self.run:
            raise InputError("--method and --run: give one (the run names its trial)")
        for ok, option, rule in (
            (self.seeds >= 1, "--seeds", "at least 1"),
            (self.top >= 1, "--top", "at least 1"),
            (self.epochs is None or self.epochs >= 1, "--epochs", "at least 1"),
        ):
            if not ok:
                value = getattr(self, option.removeprefix("--"))
                raise InputError(f"{option} {value}: must be {rule}")


def save_finals(name: str, record: FinalsRecord) -> None:
    write_text(paths.finals_path(name), json.dumps(dataclasses.asdict(record), indent=2))


def load_finals(name: str) -> FinalsRecord | None:
    """Study ``name``'s finals record, or None where it has no finals."""
    path = paths.finals_path(name)
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return FinalsRecord(**saved)
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"{path}: not a finals record ({type(error).__name__})") from None
