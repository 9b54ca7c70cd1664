"""The joint model: an answer module and a rationale module, two R2C backbones.

The answer module scores the 4 (question, answer) pairs. The rationale module scores rationales
against a query made of the question and an answer; *which* answer (or mixture of answers) is the
coupling's choice (``vcrnet.couplings``), through a :class:`RationaleScorer`.
"""

from __future__ import annotations

import torch
from torch import nn

from vcrnet.model.backbone import (
    BackboneConfig,
    Contextualized,
    Objects,
    R2CBackbone,
    Sentences,
    send,
)

Batch = dict[str, torch.Tensor]  # as made by vcrnet.features.collate
NUM_CHOICES = 4


class JointModel(nn.Module):
    def __init__(self, config: BackboneConfig, text_dim: int):
        super().__init__()
        self.config = config
        self.answer_module = R2CBackbone(config, text_dim)
        self.rationale_module = R2CBackbone(config, text_dim)

    def answer_logits(self, batch: Batch) -> torch.Tensor:
        """The answer logits, ``[B, 4]``."""
        module = self.answer_module
        objects = _objects(module, batch)
        b = batch["question"].shape[0]
        x = module.contextualize(
            sentences(batch, "question", "question"),
            sentences(batch, "answers", "answer"),
            objects,
            torch.arange(b, device=objects.reps.device).repeat_interleave(NUM_CHOICES),
        )
        return module.reason(x).view(b, NUM_CHOICES)

    def rationale_scorer(self, batch: Batch) -> RationaleScorer:
        return RationaleScorer(self.rationale_module, batch)


class RationaleScorer:
    """Rationale logits for one batch, conditioned on answers in three ways:

    - ``for_answer(a [B]) -> [B, 4]``: the query holds answer ``a[b]`` (4 pairs per item);
    - ``all_pairs() -> [B, 4, 4]``: every (answer, rationale) pair (16 per item);
    - ``mixed(w [B, 4]) -> [B, 4]``: the 4 answers' contextualised pairs averaged with weights
      ``w`` before reasoning (16 groundings, 4 reasoning passes per item).

    The 16 pairs' groundings are made once per scorer and shared by ``all_pairs``, ``mixed`` and
    a later ``for_answer`` (which then reasons over the 4 pairs picked from them).

    A rationale has the same words beside every answer, so its length does not depend on the
    answer (``vcrnet.features.batches.gather`` checks it): ``mixed`` and ``for_answer`` take the
    lengths of answer 0's row. A ``for_answer`` before any grounding needs its queries' lengths
    on the host: given answers on the host (the teacher baselines draw theirs there) it reads
    them off the batch's host lengths and sends the answers to the device without a wait; given
    answers on the device it reads the lengths back from there (one wait).
    """

    def __init__(self, module: R2CBackbone, batch: Batch):
        self.module, self.batch = module, batch
        self.objects: Objects = _objects(module, batch)
        self.size = batch["question"].shape[0]
        self._pairs: Contextualized | None = None  # the 16 pairs, [B*16, Lr, *], once made

    def for_answer(self, answers: torch.Tensor) -> torch.Tensor:
        """``answers [B]``, on the host or the batch's device."""
        device = self.objects.reps.device
        on_host = answers.device.type == "cpu"
        answers_on_device = send(answers, device) if on_host else answers
        rows = torch.arange(self.size, device=device)
        if self._pairs is not None:
            x = _pick(
                self._pairs, rows * NUM_CHOICES + answers_on_device, self._rationale_lengths()
            )
        else:
            pick = {k: self.batch[k][rows, answers_on_device] for k in _PAIR_KEYS}  # [B, 4(r)]
            pick["rationale_lengths"] = self._rationale_lengths()
            query_lengths = self.batch.get("rationale_query_lengths")  # [B, 4 a, 4 r], host
            if on_host and query_lengths is not None:
                pick["rationale_query_lengths"] = query_lengths[torch.arange(self.size), answers]
            x = self._contextualize(pick, pairs_per_item=NUM_CHOICES)
        return self.module.reason(x).view(self.size, NUM_CHOICES)

    def all_pairs(self) -> torch.Tensor:
        x = self._all_contextualized()
        return self.module.reason(x).view(self.size, NUM_CHOICES, NUM_CHOICES)

    def mixed(self, weights: torch.Tensor) -> torch.Tensor:
        x = self._all_contextualized()

        def mix(t: torch.Tensor) -> torch.Tensor:  # [B*16, L, d] -> [B*4, L, d]
            t = t.view(self.size, NUM_CHOICES, NUM_CHOICES, *t.shape[1:])
            return torch.einsum("ba,bar...->br...", weights, t).flatten(0, 1)

        mask = x.mask.view(self.size, NUM_CHOICES, NUM_CHOICES, -1)[:, 0].flatten(0, 1)
        mixed = Contextualized(
            mix(x.response),
            mix(x.attended_query),
            mix(x.attended_objects),
            mask,
            self._rationale_lengths(),
        )
        return self.module.reason(mixed).view(self.size, NUM_CHOICES)

    def _all_contextualized(self) -> Contextualized:
        if self._pairs is None:
            self._pairs = self._contextualize(self.batch, pairs_per_item=NUM_CHOICES * NUM_CHOICES)
        return self._pairs

    def _rationale_lengths(self) -> torch.Tensor | None:
        """``[B*4]`` on the CPU: rationale r of item b's length (any answer's row), or None if
        the batch has no lengths on the host."""
        lengths = self.batch.get("rationale_lengths")
        return None if lengths is None else lengths[:, 0].flatten()

    def _contextualize(self, source: Batch, pairs_per_item: int) -> Contextualized:
        return self.module.contextualize(
            sentences(source, "rationale_query", "rationale_query"),
            sentences(source, "rationales", "rationale"),
            self.objects,
            torch.arange(self.size, device=self.objects.reps.device).repeat_interleave(
                pairs_per_item
            ),
        )


_PAIR_KEYS = (
    "rationale_query",
    "rationale_query_tags",
    "rationale_query_mask",
    "rationales",
    "rationale_tags",
    "rationale_mask",
)


def host_answer_labels(batch: Batch) -> torch.Tensor:
    """``[B]`` the gold answers on the host: the batch's host copy, else read back (a wait)."""
    host = batch.get("host_answer_label")
    return host if host is not None else batch["answer_label"].cpu()


def sentences(batch: Batch, field: str, prefix: str) -> Sentences:
    """A text field of the batch (``[B, ..., L, D]``) as ``[N, L, *]`` sentences; its host
    lengths where the batch has them."""
    text = batch[field]
    lengths = batch.get(f"{prefix}_lengths")
    return Sentences(
        text.flatten(0, text.dim() - 3),
        batch[f"{prefix}_tags"].flatten(0, -2),
        batch[f"{prefix}_mask"].flatten(0, -2),
        None if lengths is None else lengths.flatten(),
    )


def _pick(
    pairs: Contextualized, groups: torch.Tensor, lengths: torch.Tensor | None
) -> Contextualized:
    """The 4 rationales of answer group ``groups [B]`` (item * 4 + answer) of the 16 pairs
    ``[B*16, Lr, *]`` -> ``[B*4, Lr, *]``; ``lengths [B*4]`` theirs (on the host)."""

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.view(-1, NUM_CHOICES, *t.shape[1:])[groups].flatten(0, 1)

    return Contextualized(
        pick(pairs.response),
        pick(pairs.attended_query),
        pick(pairs.attended_objects),
        pick(pairs.mask),
        lengths,
    )


def _objects(module: R2CBackbone, batch: Batch) -> Objects:
    return module.encode_objects(
        batch["objects"], batch["object_index"], batch["object_classes"], batch["object_mask"]
    )
