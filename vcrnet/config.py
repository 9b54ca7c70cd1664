"""One flat training configuration: what a run, a trial or ``--set key=value`` can change."""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, fields

from vcrnet.couplings import COUPLINGS, CouplingConfig
from vcrnet.couplings.base import Check
from vcrnet.errors import InputError
from vcrnet.metrics import DECODINGS, OBJECTIVE
from vcrnet.model import PRESETS, BackboneConfig, preset

OBJECTIVES = tuple(f"dev_{d}" for d in DECODINGS)
MAX_SEED = 2**32 - 1  # numpy's RandomState takes 0..2**32 - 1 (default_rng and torch more)


@dataclass(frozen=True)
class TrainConfig(CouplingConfig):
    """A run's settings as flat keys: these fields and, inherited, the coupling knobs of
    :class:`vcrnet.couplings.CouplingConfig` (declared, defaulted and checked there, once)."""

    method: str = "softmax"  # a name in vcrnet.couplings.COUPLINGS
    # weight of the rationale loss against the answer loss, (answer + ratio * rationale) /
    # (1 + ratio); for direct16 the 16-way loss (the seed's 0.2/0.8 is ratio 4)
    loss_ratio: float = 1.0
    # the model: a preset, and optional overrides of its dimensions
    preset: str = "small"
    hidden: int | None = None
    object_dim: int | None = None
    mlp_dim: int | None = None
    object_dropout: float | None = None
    rnn_dropout: float | None = None
    mlp_dropout: float | None = None
    r2c_init: bool | None = None  # R2C's initialisation, LSTMs and final MLP (None: the preset's)
    zero_object_features: bool = False  # the text-only ablation
    normalize_objects: bool = True  # standardise the frozen RoI features (see BackboneConfig)
    # optimisation, as R2C
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    lr_factor: float = 0.5  # ReduceLROnPlateau on dev Q->AR
    lr_patience: int = 1
    lr_cooldown: int = 2
    # 0: a plain shuffle each epoch (R2C's and the seed code's); > 1: noisy length buckets of
    # this many batches, less padding (vcrnet.features.batches.epoch_order), and other results:
    # +0.11 val Q->AR for R2C on the built-in data (docs/fidelity.md R10)
    bucket_batches: int = 0
    # early stopping: stop after this many epochs without a better dev Q->AR (R2C's own loop
    # trains one more: its patience 3 is 4 here, docs/fidelity.md R1)
    patience: int = 3
    seed: int = 0
    # selection: a labelled dev split carved off train (whole movies, vcrnet.features.dev_split)
    # chooses the LR steps, the stopping epoch and the best epoch; val is only reported
    dev_fraction: float = 0.1
    dev_seed: int = 0  # the carving's own seed: every trial and rerun seed shares one dev split
    # what the LR schedule, early stopping and the best epoch follow: a dev decoding
    # (dev_ + vcrnet.metrics.DECODINGS), e.g. dev_q2ar_mixture where the paper reads softmax and
    # Gumbel by the answer mixture
    objective: str = OBJECTIVE
    # GPU math: TF32 matmuls and cuDNN convolutions/RNNs (faster on Ampere and later, ~10 bits of
    # mantissa); off by default, for fidelity with float32 training. No effect on a CPU
    tf32: bool = False

    def _checks(self) -> list[Check]:
        return [
            (self.method in COUPLINGS, "method", f"one of {', '.join(COUPLINGS)}"),
            (self.preset in PRESETS, "preset", f"one of {', '.join(PRESETS)}"),
            (self.loss_ratio > 0, "loss_ratio", "positive"),
            (self.epochs >= 1, "epochs", "at least 1"),
            (self.batch_size >= 1, "batch_size", "at least 1"),
            (self.bucket_batches >= 0, "bucket_batches", "0 or more"),
            (self.lr > 0, "lr", "positive"),
            (self.weight_decay >= 0, "weight_decay", "0 or more"),
            (self.grad_clip > 0, "grad_clip", "positive (the largest gradient norm)"),
            # ReduceLROnPlateau multiplies the rate by the factor, and refuses 1 or more
            (0 < self.lr_factor < 1, "lr_factor", "in (0, 1)"),
            (self.lr_patience >= 0, "lr_patience", "0 or more"),
            (self.lr_cooldown >= 0, "lr_cooldown", "0 or more"),
            (self.patience >= 1, "patience", "at least 1"),
            (0 < self.dev_fraction <= 0.5, "dev_fraction", "in (0, 0.5]"),
            (self.objective in OBJECTIVES, "objective", f"one of {', '.join(OBJECTIVES)}"),
            (0 <= self.seed <= MAX_SEED, "seed", f"in 0..{MAX_SEED}"),
            (0 <= self.dev_seed <= MAX_SEED, "dev_seed", f"in 0..{MAX_SEED}"),
            # the model's overrides; None: the preset's
            *(
                (getattr(self, k) is None or getattr(self, k) >= 1, k, "at least 1, or none")
                for k in ("hidden", "object_dim", "mlp_dim")
            ),
            *(
                (getattr(self, k) is None or 0 <= getattr(self, k) < 1, k, "in [0, 1), or none")
                for k in ("object_dropout", "rnn_dropout", "mlp_dropout")
            ),
            *super()._checks(),
        ]

    def backbone(self) -> BackboneConfig:
        overrides = {
            k: getattr(self, k) for k in _BACKBONE_OVERRIDES if getattr(self, k) is not None
        }
        return preset(
            self.preset,
            zero_object_features=self.zero_object_features,
            normalize_objects=self.normalize_objects,
            **overrides,
        )

    def coupling(self) -> CouplingConfig:
        """The coupling knobs alone (a coupling sees nothing of the training settings)."""
        return CouplingConfig(**{f.name: getattr(self, f.name) for f in fields(CouplingConfig)})

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
            parsed[key] = _convert(value, _types(cls)[key], f"{where}: {key}")
        try:
            return cls(**parsed)
        except InputError as err:  # a value out of its range: say where it was given
            raise InputError(f"{where}: {err}" if where else str(err)) from None

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


_BACKBONE_OVERRIDES = (
    "hidden",
    "object_dim",
    "mlp_dim",
    "object_dropout",
    "rnn_dropout",
    "mlp_dropout",
    "r2c_init",
)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` -> dict, for ``--set``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


@functools.cache
def _types(cls: type) -> dict[str, object]:
    """Each field's type, resolved once from its annotation (a string: ``annotations``)."""
    return typing.get_type_hints(cls)


def _convert(value: object, kind: object, where: str) -> object:
    """A ``--set`` string as the field's type (``int``, ``float``, ``bool``, ``str``, or one of
    those ``| None``: "none", "null" or "" is None); any other value is kept as it is."""
    if not isinstance(value, str):
        return value
    args = typing.get_args(kind)
    if type(None) in args:
        if value.lower() in ("none", "null", ""):
            return None
        kind = next(a for a in args if a is not type(None))
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
    except ValueError:
        name = kind.__name__
        article = "an" if kind is int else "a"
        raise InputError(f"{where}: {value!r} is not {article} {name}") from None
    return value
