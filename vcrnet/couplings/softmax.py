"""Softmax: the rationale module sees the 4 answers mixed by the answer module's probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vcrnet.couplings.base import Coupling


class SoftmaxCoupling(Coupling):
    name = "softmax"
    answer_gradient = "pathwise"

    def rationale_loss(self, answer_logits, scorer, batch) -> torch.Tensor:
        weights = torch.softmax(answer_logits, dim=-1)  # [B, 4]
        return F.cross_entropy(scorer.mixed(weights), batch["rationale_label"])
