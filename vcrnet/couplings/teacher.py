"""The baselines: the rationale module conditioned on the gold answer with probability
``correct_answer_rate``, else on a uniformly drawn wrong answer; no gradient reaches the answer
module from the rationale loss (the two are trained side by side, combined with AND for Q->AR).
Rate 1.0 is R2C; 0.75 is the seed paper's new baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vcrnet.couplings.base import Coupling
from vcrnet.model.joint import host_answer_labels


class TeacherCoupling(Coupling):
    name = "teacher"
    answer_gradient = "none"

    def rationale_loss(self, answer_logits, scorer, batch) -> torch.Tensor:
        gold = host_answer_labels(batch)  # drawn on the host: the scorer then waits for nothing
        wrong = (gold + torch.randint(1, 4, gold.shape)) % 4  # one of the 3 wrong ones
        use_gold = torch.rand(gold.shape) < self.config.correct_answer_rate
        answers = torch.where(use_gold, gold, wrong)
        return F.cross_entropy(scorer.for_answer(answers), batch["rationale_label"])
