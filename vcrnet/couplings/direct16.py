"""Direct cross entropy: one 16-way softmax over all (answer, rationale) pairs.

``joint[a, r] = answer_logit[a] + rationale_logit[a, r]`` (log p(a, r) up to a constant), trained
on the target ``4 * answer_label + rationale_label``, so the answer module learns from the pairs
too. (The seed code concatenated the rationale logits only; adding the answer logit makes the 16
way a joint distribution and couples the two modules.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vcrnet.couplings.base import Coupling


class Direct16Coupling(Coupling):
    name = "direct16"
    reparameterized = True

    def rationale_loss(self, answer_logits, scorer, batch) -> torch.Tensor:
        joint = answer_logits.unsqueeze(2) + scorer.all_pairs()  # [B, 4, 4]
        target = 4 * batch["answer_label"] + batch["rationale_label"]
        return F.cross_entropy(joint.flatten(1), target)
