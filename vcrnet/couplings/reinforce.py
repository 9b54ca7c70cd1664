"""RL sampling: ``num_samples`` answers drawn from the answer distribution per item.

Two gradient estimators for the answer module:

- ``expectation`` (the seed paper's code): mean over samples of
  ``rationale_loss[sampled answer] * p(sampled answer)``;
- ``score`` (REINFORCE): mean over samples of
  ``rationale_loss[a] + (rationale_loss[a] - baseline) * log p(a)`` with the loss detached in the
  second term and the baseline the mean loss of the item's samples.

The rationale loss of every answer comes from one 16-pair pass, then is indexed by the samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vcrnet.couplings.base import Coupling


class ReinforceCoupling(Coupling):
    name = "reinforce"
    reparameterized = False

    def rationale_loss(self, answer_logits, scorer, batch) -> torch.Tensor:
        pair_logits = scorer.all_pairs()  # [B, 4 answers, 4 rationales]
        b = pair_logits.shape[0]
        target = batch["rationale_label"].repeat_interleave(4)
        per_answer = F.cross_entropy(pair_logits.flatten(0, 1), target,
                                     reduction="none").view(b, 4)  # [B, 4]
        log_p = torch.log_softmax(answer_logits, dim=-1)
        samples = torch.multinomial(log_p.exp().detach(), self.config.num_samples,
                                    replacement=True)  # [B, K]
        loss = per_answer.gather(1, samples)  # [B, K]
        log_p_sample = log_p.gather(1, samples)
        if self.config.estimator == "score":
            baseline = loss.detach().mean(dim=1, keepdim=True)
            return (loss + (loss.detach() - baseline) * log_p_sample).mean()
        return (loss * log_p_sample.exp()).mean()
