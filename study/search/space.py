"""Search spaces: a small YAML vocabulary, checked whole before anything starts.

A space is either a distribution space, searched by Optuna (or at random)::

    fixed:                     # TrainConfig values every trial shares
      epochs: 6
    params:                    # one distribution per TrainConfig key
      method: {choice: [softmax, gumbel, reinforce, direct16, teacher]}
      loss_ratio: {loguniform: [0.25, 4.0]}
      tau_start: {uniform: [1.0, 10.0], methods: [gumbel]}   # only where method is gumbel
      num_samples: {int: [4, 64], log: true, methods: [reinforce]}

or a grid, one trial per entry, each optionally named by a ``label`` (the row it makes in the
tables: two trials of one method, e.g. R2C and the new baseline, stay apart)::

    fixed: {epochs: 6}
    trials:
      - {label: new baseline, method: teacher, correct_answer_rate: 0.75}
      - {label: softmax 1:4, method: softmax, loss_ratio: 4.0}

The distributions: ``choice: [v, ...]``, ``uniform: [low, high]``, ``loguniform: [low, high]``,
``int: [low, high]`` (with ``log: true`` for a log scale) and ``fixed: v``. ``methods`` limits a
parameter to some coupling methods (the temperature schedule exists only for ``gumbel``): the
space is *conditional*, sampled define-by-run. Every key, bound and value is checked against
:class:`vcrnet.config.TrainConfig`; a mistake is one line naming the file, its line and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from vcrnet.config import TrainConfig
from vcrnet.couplings import COUPLINGS
from vcrnet.errors import InputError, first_line

KINDS = ("choice", "uniform", "loguniform", "int", "fixed")
TOP_LEVEL = ("description", "fixed", "params", "trials")
LABEL = "label"  # a grid trial's name in the tables (not a TrainConfig key)
SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"  # the repository's
CONFIG_KEYS = tuple(f.name for f in fields(TrainConfig))


@dataclass(frozen=True)
class Param:
    """One distribution. ``args``: the choices, the (low, high) bounds, or the fixed value."""

    name: str
    kind: str
    args: Any
    log: bool = False
    methods: tuple[str, ...] | None = None  # None: every method

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def suggest(self, trial) -> Any:
        """Draw from an ``optuna.Trial`` (define-by-run)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.args))
        if self.kind == "uniform":
            return trial.suggest_float(self.name, *self.args)
        if self.kind == "loguniform":
            return trial.suggest_float(self.name, *self.args, log=True)
        if self.kind == "int":
            return trial.suggest_int(self.name, *self.args, log=self.log)
        return self.args


@dataclass
class SearchSpace:
    path: Path
    fixed: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    trials: list[dict[str, Any]] | None = None  # a grid; None for a distribution space
    description: str = ""

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def is_grid(self) -> bool:
        return self.trials is not None

    def methods(self) -> list[str]:
        """The coupling methods this space can produce, in registry order."""
        if self.trials is not None:
            found = {t.get("method", self.fixed.get("method", "softmax")) for t in self.trials}
        elif "method" in self.params:
            p = self.params["method"]
            found = set(p.args) if p.kind == "choice" else {p.args}
        else:
            found = {self.fixed.get("method", "softmax")}
        return [m for m in COUPLINGS if m in found]

    def suggest(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: draw the method, then only the parameters that apply to it.
        Returns the constants (``fixed``) for Ray Tune's ``OptunaSearch`` to add."""
        method = (
            self.params["method"].suggest(trial)
            if "method" in self.params
            else (self.fixed.get("method", "softmax"))
        )
        for p in self.params.values():
            if p.name != "method" and p.applies_to(method):
                p.suggest(trial)
        return dict(self.fixed)

    def varied(self) -> list[str]:
        """The settings that differ between trials besides the method: the drawn parameters,
        or a grid's keys (its labels and method aside)."""
        keys = self.params if self.trials is None else {k: 0 for t in self.trials for k in t}
        return [k for k in keys if k not in ("method", LABEL)]

    def labels(self) -> list[str]:
        """The grid's row labels, in order (a trial without one is named by its method)."""
        return [trial_label(t, self.fixed) for t in self.trials or []]

    def config(self, values: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: ``fixed`` overridden by the trial's values, with the
        parameters that do not apply to its method dropped (they keep their defaults)."""
        merged = {k: v for k, v in {**self.fixed, **values}.items() if k != LABEL}
        method = merged.get("method", "softmax")
        keep = {
            k: v
            for k, v in merged.items()
            if k not in self.params or self.params[k].applies_to(method)
        }
        return TrainConfig.from_dict(keep, where=str(self.path))

    def max_epochs(self, overrides: dict) -> int:
        """The most epochs a trial can run: ``--set epochs`` (``overrides``), the space's fixed
        value, else the largest a grid row or an ``epochs`` parameter gives (TrainConfig's
        default where none does)."""
        if "epochs" in overrides:
            return int(overrides["epochs"])
        if "epochs" in self.fixed:
            return int(self.fixed["epochs"])
        candidates = [t.get("epochs") for t in self.trials or []] + [
            p.args[1] for p in self.params.values() if p.name == "epochs" and p.kind == "int"
        ]
        return max([int(c) for c in candidates if c] or [TrainConfig().epochs])

    def approaches(self) -> list[str]:
        """What ``best`` gives a row each: a grid's row labels (a row without one named by its
        method), else the coupling methods the space can draw (``methods``)."""
        if self.is_grid:
            return list(dict.fromkeys(self.labels()))
        return self.methods()


class TrialConfigs:
    """A Tune config -> the trial's TrainConfig: the parsed space's values, then the launch's
    ``--set`` overrides. It holds the space itself (plain data: it pickles), so neither a trial
    nor a driver callback reads the space's file again: a file only the driver has is enough."""

    def __init__(self, space: SearchSpace, overrides: dict):
        self.space, self.overrides = space, dict(overrides)

    def config(self, tune_config: dict) -> TrainConfig:
        return self.space.config({**trial_values(tune_config), **self.overrides})

    def params(self, tune_config: dict) -> dict:
        """The trial's MLflow params: its resolved TrainConfig as a dict."""
        return self.config(tune_config).to_dict()

    def approach(self, tune_config: dict) -> str:
        """The trial's row in ``best``: its grid row's label, else its method."""
        return trial_values(tune_config).get(LABEL) or self.config(tune_config).method


def trial_values(config: dict) -> dict:
    """The values of a Tune config (a grid trial nests them under ``grid``)."""
    values = dict(config.get("grid", {}))
    values.update({k: v for k, v in config.items() if k != "grid"})
    return values


def slug(label: str) -> str:
    """A label as a file or run name: ``softmax 1:4`` -> ``softmax-1-4``."""
    return re.sub(r"[^\w.]+", "-", label).strip("-")


def trial_label(values: dict[str, Any], fixed: dict[str, Any] | None = None) -> str:
    """A grid trial's label, else its method."""
    return str(values.get(LABEL) or values.get("method") or (fixed or {}).get("method", "softmax"))


def resolve(name_or_path: str | Path) -> Path:
    """A shipped space by name (``paper``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path.absolute()
    shipped = SPACES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
    raise InputError(f"--space {name_or_path}: no such file or shipped space ({names})")


def load_space(name_or_path: str | Path) -> SearchSpace:
    path = resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
    return parse_space(text, path)


def parse_space(text: str, path: str | Path = "<space>") -> SearchSpace:
    path = Path(path)
    lines = _Lines(text, path)
    data = lines.data
    if not isinstance(data, dict):
        raise lines.error("", "a search space is a mapping with params or trials")
    for key in data:
        if key not in TOP_LEVEL:
            raise lines.error(str(key), f"unknown key (expected one of {', '.join(TOP_LEVEL)})")
    if ("params" in data) == ("trials" in data):
        raise lines.error("", "give exactly one of params (a search) and trials (a grid)")
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise lines.error("fixed", "must be a mapping of TrainConfig keys to values")
    _check_config(fixed, "fixed", lines)
    space = SearchSpace(path, fixed=fixed, description=str(data.get("description", "")))
    if "trials" in data:
        space.trials = _parse_grid(data["trials"], fixed, lines)
    else:
        params = data["params"]
        if not isinstance(params, dict) or not params:
            raise lines.error("params", "must be a non-empty mapping of keys to distributions")
        space.params = {str(k): _parse_param(str(k), v, lines) for k, v in params.items()}
        for name in space.params:
            if name in fixed:
                raise lines.error(f"params.{name}", "is also in fixed: give it once")
    return space


def _parse_grid(trials: object, fixed: dict, lines: _Lines) -> list[dict]:
    if not isinstance(trials, list) or not trials:
        raise lines.error("trials", "must be a non-empty list of mappings")
    for i, trial in enumerate(trials):
        if not isinstance(trial, dict):
            raise lines.error(f"trials.{i}", "must be a mapping of TrainConfig keys to values")
        if LABEL in trial and (not isinstance(trial[LABEL], str) or not slug(trial[LABEL])):
            raise lines.error(f"trials.{i}.{LABEL}", "must be a non-empty string")
        _check_config(
            {k: v for k, v in {**fixed, **trial}.items() if k != LABEL}, f"trials.{i}", lines
        )
    slugs = [slug(trial_label(t, fixed)) for t in trials]
    for i, name in enumerate(slugs):
        if name in slugs[:i] and LABEL in trials[i]:
            raise lines.error(
                f"trials.{i}.{LABEL}", f"{trials[i][LABEL]!r} is used twice (as a file name)"
            )
    return trials


def _parse_param(name: str, spec: object, lines: _Lines) -> Param:
    key = f"params.{name}"
    if name not in CONFIG_KEYS:
        raise lines.error(key, "unknown key: not a TrainConfig field")
    if not isinstance(spec, dict):
        raise lines.error(key, f"must be a mapping with one of {', '.join(KINDS)}")
    kinds = [k for k in spec if k in KINDS]
    extra = [k for k in spec if k not in (*KINDS, "log", "methods")]
    if len(kinds) != 1 or extra:
        raise lines.error(
            key,
            f"needs exactly one of {', '.join(KINDS)} "
            f"(and optionally log, methods); got {', '.join(map(str, spec))}",
        )
    kind, args = kinds[0], spec[kinds[0]]
    methods = spec.get("methods")
    if methods is not None:
        if not isinstance(methods, list) or not methods:
            raise lines.error(f"{key}.methods", "must be a non-empty list of methods")
        for m in methods:
            if m not in COUPLINGS:
                raise lines.error(
                    f"{key}.methods", f"unknown method {m!r} (one of {', '.join(COUPLINGS)})"
                )
        methods = tuple(methods)
    log = spec.get("log", kind == "loguniform")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise lines.error(key, "choice: needs a non-empty list")
        values = args
    elif kind == "fixed":
        values = [args]
    else:
        if (
            not isinstance(args, list)
            or len(args) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in args)
        ):
            raise lines.error(key, f"{kind}: needs [low, high], two numbers")
        low, high = args
        if kind == "int" and not all(isinstance(v, int) for v in args):
            raise lines.error(key, "int: bounds must be integers")
        if low >= high:
            raise lines.error(key, f"{kind}: low must be below high (got {low} >= {high})")
        if log and low <= 0:
            raise lines.error(key, f"{kind}: a log scale needs a positive low bound (got {low})")
        values, args = [low, high], (low, high)
    if name == "method" and (kind not in ("choice", "fixed") or methods):
        raise lines.error(key, "method: use choice or fixed, without methods")
    for value in values:  # every value (or both bounds) must make a valid TrainConfig
        _check_config({name: value}, key, lines)
    return Param(name, kind, tuple(args) if kind == "choice" else args, bool(log), methods)


def _check_config(values: dict, key: str, lines: _Lines) -> None:
    try:
        TrainConfig.from_dict(values, where="")
    except InputError as err:
        raise lines.error(key, str(err).removeprefix(": ")) from None


class _Lines:
    """The parsed YAML and the line of each dotted key, for messages that point at it."""

    def __init__(self, text: str, path: Path):
        self.path = path
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            problem = getattr(err, "problem", None) or first_line(err)
            raise InputError(f"{where}: not valid YAML: {problem}") from None
        self.line_of: dict[str, int] = {}
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}.{key.value}" if prefix else str(key.value)
                self.line_of[dotted] = key.start_mark.line + 1
                self._walk(value, dotted)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                dotted = f"{prefix}.{i}"
                self.line_of[dotted] = value.start_mark.line + 1
                self._walk(value, dotted)

    def error(self, key: str, problem: str) -> InputError:
        line = self.line_of.get(key)
        where = f"{self.path}:{line}" if line else str(self.path)
        return InputError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")
