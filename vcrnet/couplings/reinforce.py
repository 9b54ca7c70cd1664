"""RL sampling: the rationale loss of the answers drawn from (or weighted by) the answer
distribution ``p = softmax(answer_logits)``. ``l(a)`` is the rationale cross entropy given answer
``a``; the paper's objective (eq. 4) is ``E_{a~p}[l(a)] = sum_a p(a) l(a)``. Three estimators
(``estimator``), all from one 16-pair pass (``l`` for every answer, then indexed):

- ``expectation`` (the seed code's surrogate, per item): the mean over ``num_samples`` answers
  ``a_k ~ p`` of ``l(a_k) * p(a_k)``. Its expected value is ``sum_a p(a)^2 l(a)``, *not* eq. 4:
  it favours the answers already likely. Kept because the seed paper's numbers were made with it.
  (The seed code also paired item j's loss with the answer sampled for item k, a batch-mixing
  indexing bug, ``all_ra_loss[:, samp_ind]``; this is the per-item form it meant.)
- ``exact``: eq. 4 itself, ``sum_a p(a) l(a)``, computed over the 4 answers (no sampling, no
  variance); its gradient is the exact gradient of eq. 4.
- ``score`` (REINFORCE with a leave-one-out baseline, RLOO): the mean over the samples of
  ``l(a_k)``, whose gradient w.r.t. the answer logits is the mean of
  ``(l(a_k) - b_k) * grad log p(a_k)`` with ``b_k`` the mean loss of the item's *other* samples:
  an unbiased estimate of eq. 4's gradient. Needs ``num_samples >= 2`` (checked by the config).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vcrnet.couplings.base import Coupling


class ReinforceCoupling(Coupling):
    name = "reinforce"
    answer_gradient = "estimator"

    def rationale_loss(self, answer_logits, scorer, batch) -> torch.Tensor:
        losses = per_answer_loss(scorer.all_pairs(), batch["rationale_label"])  # [B, 4]
        log_p = torch.log_softmax(answer_logits, dim=-1)  # [B, 4]
        if self.config.estimator == "exact":
            return exact_loss(losses, log_p)
        samples = torch.multinomial(
            log_p.exp().detach(), self.config.num_samples, replacement=True
        )  # [B, K]
        if self.config.estimator == "score":
            return rloo_loss(losses, log_p, samples)
        return expectation_loss(losses, log_p, samples)


def per_answer_loss(pair_logits: torch.Tensor, rationale_label: torch.Tensor) -> torch.Tensor:
    """``l(a)``: ``pair_logits [B, 4 answers, 4 rationales]``, ``rationale_label [B]`` ->
    the rationale cross entropy given each answer, ``[B, 4]``."""
    b = pair_logits.shape[0]
    target = rationale_label.repeat_interleave(4)
    return F.cross_entropy(pair_logits.flatten(0, 1), target, reduction="none").view(b, 4)


def expectation_loss(
    losses: torch.Tensor, log_p: torch.Tensor, samples: torch.Tensor
) -> torch.Tensor:
    """The seed's surrogate: mean of ``l(a_k) p(a_k)``. ``losses, log_p [B, 4]``,
    ``samples [B, K]`` -> a scalar (an estimate of ``sum_a p(a)^2 l(a)``)."""
    return (losses.gather(1, samples) * log_p.gather(1, samples).exp()).mean()


def exact_loss(losses: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Eq. 4: the batch mean of ``sum_a p(a) l(a)``. ``losses, log_p [B, 4]`` -> a scalar."""
    return (log_p.exp() * losses).sum(1).mean()


def rloo_loss(losses: torch.Tensor, log_p: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """REINFORCE with a leave-one-out baseline. ``losses, log_p [B, 4]``, ``samples [B, K]``
    (K >= 2) -> a scalar whose value is the mean sampled loss and whose gradient w.r.t. the
    answer logits is the mean of ``(l_k - b_k) grad log p(a_k)``, ``b_k`` the mean of the others."""
    k = samples.shape[1]
    sampled = losses.gather(1, samples)  # [B, K]
    baseline = (sampled.sum(1, keepdim=True) - sampled) / (k - 1)  # leave-one-out, [B, K]
    log_p_sample = log_p.gather(1, samples)
    advantage = (sampled - baseline).detach()
    return (sampled + advantage * (log_p_sample - log_p_sample.detach())).mean()
