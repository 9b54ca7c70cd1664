"""The small interface every coupling implements, and the settings they share.

A coupling decides, during training, which answer the rationale module is conditioned on and how
the rationale loss reaches the answer module. Evaluation is the same for all: the rationale
module is conditioned on each answer in turn (``RationaleScorer.all_pairs``).

``reparameterized`` says how gradients reach the answer module, as ``torch.distributions`` marks
``has_rsample``: True when they flow through a differentiable path (softmax weights, Gumbel-softmax
samples, the 16-way joint), False for a score-function estimator (sampling) or none (teacher).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vcrnet.model.joint import RationaleScorer


@dataclass(frozen=True)
class CouplingConfig:
    """Settings of all couplings; each reads the ones it needs."""

    tau_start: float = 5.0  # gumbel: temperature at epoch 0
    tau_end: float = 1.0  # gumbel: temperature after annealing
    anneal_epochs: int = 10  # gumbel: epochs to go from tau_start to tau_end, then held
    anneal: str = "linear"  # gumbel: "linear" or "exponential"
    straight_through: bool = False  # gumbel: hard one-hot forward, soft gradient
    num_samples: int = 64  # reinforce: answers sampled per item
    estimator: str = "expectation"  # reinforce: "expectation" (the seed code's) or "score"
    correct_answer_rate: float = 0.75  # teacher: P(condition on the gold answer)


class Coupling:
    name: ClassVar[str]
    reparameterized: ClassVar[bool]

    def __init__(self, config: CouplingConfig):
        self.config = config
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based): schedules follow it."""
        self.epoch = epoch

    def state(self) -> dict[str, float]:
        """Schedule values worth logging (e.g. the temperature)."""
        return {}

    def rationale_loss(self, answer_logits: torch.Tensor, scorer: RationaleScorer,
                       batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training rationale loss (a scalar). ``answer_logits [B, 4]``."""
        raise NotImplementedError
