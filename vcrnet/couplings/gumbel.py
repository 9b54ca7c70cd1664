"""Gumbel-softmax: the mixture weights are a relaxed sample of the answer distribution.

The temperature goes from ``tau_start`` to ``tau_end`` over ``anneal_epochs`` (linearly or
exponentially), then stays at ``tau_end``; ``straight_through`` uses the hard one-hot sample in the
forward pass and the relaxed one's gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vcrnet.couplings.base import Coupling


class GumbelCoupling(Coupling):
    name = "gumbel"
    reparameterized = True

    @property
    def tau(self) -> float:
        c = self.config
        progress = min(self.epoch / c.anneal_epochs, 1.0) if c.anneal_epochs > 0 else 1.0
        if c.anneal == "exponential":
            return c.tau_start * (c.tau_end / c.tau_start) ** progress
        return c.tau_start + (c.tau_end - c.tau_start) * progress

    def state(self) -> dict[str, float]:
        return {"tau": self.tau}

    def rationale_loss(self, answer_logits, scorer, batch) -> torch.Tensor:
        weights = F.gumbel_softmax(answer_logits, tau=self.tau,
                                   hard=self.config.straight_through)  # [B, 4]
        return F.cross_entropy(scorer.mixed(weights), batch["rationale_label"])
