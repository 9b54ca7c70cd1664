"""One flat training configuration: what a run, a trial or ``--set key=value`` can change."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from vcrnet.couplings import COUPLINGS, CouplingConfig
from vcrnet.errors import InputError
from vcrnet.model import PRESETS, BackboneConfig, preset


@dataclass(frozen=True)
class TrainConfig:
    method: str = "softmax"  # a name in vcrnet.couplings.COUPLINGS
    loss_ratio: float = 1.0  # weight of the rationale loss against the answer loss (1:ratio)
    # the model: a preset, and optional overrides of its dimensions
    preset: str = "small"
    hidden: int | None = None
    object_dim: int | None = None
    mlp_dim: int | None = None
    object_dropout: float | None = None
    rnn_dropout: float | None = None
    mlp_dropout: float | None = None
    zero_object_features: bool = False  # the text-only ablation
    normalize_objects: bool = True  # standardise the frozen RoI features (see BackboneConfig)
    # optimisation, as R2C
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    lr_factor: float = 0.5  # ReduceLROnPlateau on validation Q->AR
    lr_patience: int = 1
    lr_cooldown: int = 2
    patience: int = 3  # early stopping: epochs without a better validation Q->AR
    seed: int = 0
    # couplings (see vcrnet.couplings.base.CouplingConfig)
    tau_start: float = 5.0
    tau_end: float = 1.0
    anneal_epochs: int = 10
    anneal: str = "linear"
    straight_through: bool = False
    num_samples: int = 64
    estimator: str = "expectation"
    correct_answer_rate: float = 0.75

    def __post_init__(self) -> None:
        checks = [
            (self.method in COUPLINGS, "method", f"one of {', '.join(COUPLINGS)}"),
            (self.preset in PRESETS, "preset", f"one of {', '.join(PRESETS)}"),
            (self.loss_ratio > 0, "loss_ratio", "positive"),
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.batch_size >= 1, "batch_size", "at least 1"),
            (self.lr > 0, "lr", "positive"),
            (self.tau_start > 0 and self.tau_end > 0, "tau_start/tau_end", "positive"),
            (self.anneal_epochs >= 0, "anneal_epochs", "0 or more"),
            (self.anneal in ("linear", "exponential"), "anneal", "linear or exponential"),
            (self.num_samples >= 1, "num_samples", "at least 1"),
            (self.estimator in ("expectation", "score"), "estimator", "expectation or score"),
            (0.0 <= self.correct_answer_rate <= 1.0, "correct_answer_rate", "in 0..1"),
        ]
        for ok, key, expected in checks:
            if not ok:
                got = ", ".join(repr(getattr(self, k)) for k in key.split("/"))
                raise InputError(f"{key}: must be {expected} (got {got})")

    def backbone(self) -> BackboneConfig:
        overrides = {k: getattr(self, k) for k in _BACKBONE_OVERRIDES
                     if getattr(self, k) is not None}
        return preset(self.preset, zero_object_features=self.zero_object_features,
                      normalize_objects=self.normalize_objects, **overrides)

    def coupling(self) -> CouplingConfig:
        names = {f.name for f in fields(CouplingConfig)}
        return CouplingConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> TrainConfig:
        """Build from a dict of values or strings (``--set``); unknown keys are refused."""
        known = {f.name: f for f in fields(cls)}
        parsed = {}
        for key, value in values.items():
            if key not in known:
                raise InputError(f"{where}: unknown key {key!r}")
            parsed[key] = _convert(value, known[key].type, f"{where}: {key}")
        return cls(**parsed)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


_BACKBONE_OVERRIDES = ("hidden", "object_dim", "mlp_dim", "object_dropout", "rnn_dropout",
                       "mlp_dropout")


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` -> dict, for ``--set``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _convert(value: object, annotation: str, where: str) -> object:
    if not isinstance(value, str):
        return value
    if "None" in annotation and value.lower() in ("none", "null", ""):
        return None
    base = annotation.split("|")[0].strip()
    try:
        if base == "bool":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if base == "int":
            return int(value)
        if base == "float":
            return float(value)
    except ValueError:
        article = "an" if base == "int" else "a"
        raise InputError(f"{where}: {value!r} is not {article} {base}") from None
    return value
