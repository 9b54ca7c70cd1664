"""Gumbel-softmax: the mixture weights are a relaxed sample of the answer distribution.

The temperature goes from ``tau_start`` to ``tau_end`` over ``anneal_epochs`` (linearly or
exponentially), then stays at ``tau_end``. It is stepped per iteration (``anneal_per:
iteration``, as the seed code) or once per epoch (``anneal_per: epoch``), like ``np.linspace``
over the steps of the annealing: the first step uses ``tau_start``, the last step of epoch
``anneal_epochs - 1`` uses ``tau_end`` (so a 10-epoch run annealed over 10 epochs ends at
``tau_end``), and every later step too. ``anneal_epochs: 0`` (or a single annealing step)
holds ``tau_end`` from the start. ``straight_through`` uses the hard one-hot sample in the forward
pass and the relaxed one's gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vcrnet.couplings.base import Coupling, CouplingConfig


class GumbelCoupling(Coupling):
    name = "gumbel"
    answer_gradient = "pathwise"

    def __init__(self, config: CouplingConfig):
        super().__init__(config)
        self.progress = 0.0  # 0 at the first step, 1 at the last step of annealing and after

    def set_position(self, epoch: int, batch: int = 0, batches: int = 1) -> None:
        if self.config.anneal_per == "epoch":
            batch, batches = 0, 1
        step = epoch * batches + batch
        last = self.config.anneal_epochs * batches - 1  # the step that uses tau_end
        self.progress = min(step / last, 1.0) if last > 0 else 1.0

    @property
    def tau(self) -> float:
        c = self.config
        if c.anneal == "exponential":
            return c.tau_start * (c.tau_end / c.tau_start) ** self.progress
        return c.tau_start + (c.tau_end - c.tau_start) * self.progress

    def state(self) -> dict[str, float]:
        return {"tau": self.tau}

    def rationale_loss(self, answer_logits, scorer, batch) -> torch.Tensor:
        weights = F.gumbel_softmax(
            answer_logits, tau=self.tau, hard=self.config.straight_through
        )  # [B, 4]
        return F.cross_entropy(scorer.mixed(weights), batch["rationale_label"])
