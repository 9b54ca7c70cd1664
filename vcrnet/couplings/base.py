"""The small interface every coupling implements, and the settings they share.

A coupling decides, during training, which answer the rationale module is conditioned on and how
the rationale loss reaches the answer module. Evaluation conditions the rationale module on each
answer in turn (``RationaleScorer.all_pairs``) for every coupling; a coupling only says how its own
16-way decoding scores the pairs (``pair_scores``).

``answer_gradient`` says how the rationale loss reaches the answer logits (``torch.distributions``
marks the first kind ``has_rsample``):

- ``"pathwise"``: the loss is a differentiable function of the answer logits (softmax weights,
  Gumbel-softmax samples, the joint 16-way distribution): reparameterised;
- ``"estimator"``: answers are discrete (sampled or enumerated) and the gradient comes through
  their probabilities, by an estimator (RL sampling);
- ``"none"``: it does not reach them (the teacher-forced baselines, the seed's separate 16-way);
  the answer module learns from its own loss only.

:class:`CouplingConfig` is the one declaration of the coupling knobs, their defaults and their
checks; ``vcrnet.config.TrainConfig`` extends it, so its flat keys are these fields.
"""

from __future__ import annotations

import functools
import math
import numbers
import typing
from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from vcrnet.errors import InputError
from vcrnet.model.joint import RationaleScorer

ANNEALS = ("linear", "exponential")
ANNEAL_PER = ("iteration", "epoch")
ESTIMATORS = ("expectation", "exact", "score")
DIRECT16_VARIANTS = ("separate", "joint")
ANSWER_GRADIENTS = ("pathwise", "estimator", "none")
Check = tuple[bool, str, str]  # (ok, "key" or "key/other_key", what the value must be)


@dataclass(frozen=True)
class CouplingConfig:
    """Settings of all couplings; each reads the ones it needs. Checked on construction."""

    tau_start: float = 5.0  # gumbel: temperature at the first step
    tau_end: float = 1.0  # gumbel: temperature at the last step of annealing, then held
    anneal_epochs: int = 10  # gumbel: epochs to go from tau_start to tau_end
    anneal: str = "linear"  # gumbel: "linear" or "exponential"
    anneal_per: str = "iteration"  # gumbel: step the temperature per "iteration" or per "epoch"
    straight_through: bool = False  # gumbel: hard one-hot forward, soft gradient
    num_samples: int = 64  # reinforce: answers sampled per item (not used by "exact")
    estimator: str = "expectation"  # reinforce: "expectation" (the seed's), "exact", "score"
    direct16_variant: str = "separate"  # direct16: "separate" (the seed's) or "joint"
    correct_answer_rate: float = 0.75  # teacher: P(condition on the gold answer)

    def __post_init__(self) -> None:
        for f in fields(self):  # each value of its field's type first: the ranges compare them
            value = getattr(self, f.name)
            expected = _type_expected(value, _hints(type(self))[f.name])
            if expected:
                raise InputError(f"{f.name}: must be {expected} (got {value!r})")
        for ok, key, expected in self._checks():
            if not ok:
                got = ", ".join(repr(getattr(self, k)) for k in key.split("/"))
                raise InputError(f"{key}: must be {expected} (got {got})")

    def _checks(self) -> list[Check]:
        """What every value must be, beyond its type (``int``, ``bool`` and ``str`` as annotated;
        a ``float`` is any finite number; ``| None`` also admits None); a subclass extends the
        list."""
        return [
            (self.tau_start > 0 and self.tau_end > 0, "tau_start/tau_end", "positive"),
            (self.anneal_epochs >= 0, "anneal_epochs", "0 or more"),
            (self.anneal in ANNEALS, "anneal", " or ".join(ANNEALS)),
            (self.anneal_per in ANNEAL_PER, "anneal_per", " or ".join(ANNEAL_PER)),
            (self.num_samples >= 1, "num_samples", "at least 1"),
            (self.estimator in ESTIMATORS, "estimator", f"one of {', '.join(ESTIMATORS)}"),
            (
                self.estimator != "score" or self.num_samples >= 2,
                "num_samples",
                "at least 2 with estimator score (its leave-one-out baseline needs another sample)",
            ),
            (
                self.direct16_variant in DIRECT16_VARIANTS,
                "direct16_variant",
                " or ".join(DIRECT16_VARIANTS),
            ),
            (0.0 <= self.correct_answer_rate <= 1.0, "correct_answer_rate", "in 0..1"),
        ]


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _type_expected(value: object, hint: object) -> str | None:
    """What ``value`` must be to have the annotated type ``hint``, or None where it has it."""
    args = typing.get_args(hint)
    optional = type(None) in args
    kind = next((a for a in args if a is not type(None)), hint)
    if optional and value is None:
        return None
    ok, expected = {
        bool: (isinstance(value, bool), "true or false"),
        int: (isinstance(value, numbers.Integral) and not isinstance(value, bool), "an int"),
        float: (
            isinstance(value, numbers.Real) and not isinstance(value, bool) and _finite(value),
            "a finite number",
        ),
        str: (isinstance(value, str), "a string"),
    }.get(kind, (True, ""))
    if ok:
        return None
    return expected.replace(" or ", ", ") + " or none" if optional else expected


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


class Coupling:
    name: ClassVar[str]
    answer_gradient: str  # one of ANSWER_GRADIENTS (see the module docstring); may depend on
    # the configuration (direct16's variant), so read it from the instance

    def __init__(self, config: CouplingConfig):
        self.config = config

    def set_position(self, epoch: int, batch: int = 0, batches: int = 1) -> None:
        """Called before each training step: step ``batch`` of ``batches`` in ``epoch``
        (0-based). Schedules are functions of this position only, so a resumed run repeats
        them exactly."""

    def state(self) -> dict[str, float]:
        """Schedule values worth logging (e.g. the temperature), at the last position set."""
        return {}

    def rationale_loss(
        self, answer_logits: torch.Tensor, scorer: RationaleScorer, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The training rationale loss (a scalar). ``answer_logits [B, 4]``."""
        raise NotImplementedError

    def pair_scores(self, answer_logits: torch.Tensor, pair_logits: torch.Tensor) -> torch.Tensor:
        """The 16 (answer, rationale) pairs' scores for a 16-way decoding (the argmax picks the
        pair). ``answer_logits [B, 4]``, ``pair_logits [B, 4 answers, 4 rationales]`` ->
        ``[B, 4, 4]``. By default :func:`factorised_pair_scores`; ``direct16`` scores the pairs
        as it was trained."""
        return factorised_pair_scores(answer_logits, pair_logits)


def factorised_pair_scores(answer_logits: torch.Tensor, pair_logits: torch.Tensor) -> torch.Tensor:
    """``log p(a) + log p(r | a)``, the two modules' own factorisation of the 16 pairs:
    ``answer_logits [B, 4]``, ``pair_logits [B, 4 answers, 4 rationales]`` -> ``[B, 4, 4]``."""
    return torch.log_softmax(answer_logits, -1).unsqueeze(2) + torch.log_softmax(pair_logits, -1)
