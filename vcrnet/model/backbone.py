"""The R2C backbone (Zellers et al., 2019) over cached features, forward path top to bottom.

One backbone scores N (query, response) pairs against an item's objects:

1. objects: the 2048-d RoI feature standardised per dimension (a BatchNorm without affine
   parameters; see ``normalize_objects``), ``[feature | class embedding]`` -> dropout -> Linear ->
   ReLU. (R2C also predicted each object's class from its feature, a loss that regularised the
   ResNet block it fine-tuned; our features are frozen and cached, so that head would train only
   itself: it is left out.)
2. grounding: each word's text vector joined with the object it is tagged with, through a shared
   BiLSTM (query and response alike, in one call);
3. contextualisation: bilinear attention from each response word to the query words and to the
   objects;
4. reasoning: ``[response | attended objects | attended query]`` through a 2-layer BiLSTM;
5. a masked max-pool of ``[reasoning | response | attended query]`` and an MLP to one logit.

Steps 2-3 and 4-5 are separate methods so that a coupling can mix the contextualised pairs of the 4
answers before reasoning (``vcrnet.couplings.softmax``).

The LSTMs run on packed sequences, sorted by the lengths the batch carries on the host
(``Sentences.lengths``): no step waits for the GPU to say how long a sentence is, and the query
and the response share one grounding call (its steps are the longer sentence's, not the sum).

``r2c_init`` initialises as R2C's AllenNLP configuration (``default.json``'s initializer): LSTM
input-to-hidden weights xavier-uniform, hidden-to-hidden weights orthogonal, biases 0 except the
forget gate's 1 (AllenNLP's ``lstm_hidden_bias``); the final MLP's weights xavier-uniform, biases 0.
Otherwise PyTorch's defaults (LSTMs uniform in +-1/sqrt(hidden), forget bias ~0). The attention
matrices are xavier-uniform in both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

NUM_CLASSES = 81
OBJECT_FEATURE_DIM = 2048


@dataclass(frozen=True)
class BackboneConfig:
    """Dimensions and dropouts; ``PRESETS`` names the usual ones (``r2c`` is R2C's)."""

    hidden: int = 256  # per LSTM direction
    object_dim: int = 512
    class_embed_dim: int = 128
    mlp_dim: int = 1024
    object_dropout: float = 0.1
    rnn_dropout: float = 0.3  # variational: one mask per sequence, as AllenNLP's R2C
    mlp_dropout: float = 0.3
    zero_object_features: bool = False  # the text-only ablation: RoI features set to 0
    # Our addition to R2C. R2C fine-tunes ResNet's last block, which adapts the features; ours are
    # frozen and cached, and a large component common to all objects (mean 0.22 against a
    # per-dimension spread of 0.05 on the synthetic data) hides what tells objects apart. Without
    # it the answer module stays at chance for 8 epochs on the synthetic data; with it, it learns.
    normalize_objects: bool = True
    r2c_init: bool = False  # R2C's initialisation of the LSTMs and final MLP (module docstring)


PRESETS = {
    "r2c": BackboneConfig(r2c_init=True),
    # small and tiny keep PyTorch's default initialisation: docs/results.md's synthetic numbers
    # were measured with it (`--set r2c_init=true` tries R2C's).
    # No dropout for the synthetic default: with R2C's (0.1/0.3/0.3) the answer module stayed at
    # chance for 7 epochs on 1,500 questions; without, it reached Q->A 0.67 in 5 (docs/results.md).
    "small": BackboneConfig(
        hidden=64,
        object_dim=128,
        class_embed_dim=32,
        mlp_dim=128,
        object_dropout=0.0,
        rnn_dropout=0.0,
        mlp_dropout=0.0,
    ),
    "tiny": BackboneConfig(
        hidden=8,
        object_dim=16,
        class_embed_dim=8,
        mlp_dim=16,
        object_dropout=0.0,
        rnn_dropout=0.0,
        mlp_dropout=0.0,
    ),
}


def preset(name: str, **overrides) -> BackboneConfig:
    return replace(PRESETS[name], **overrides)


@dataclass
class Sentences:
    """N padded sentences: ``text [N, L, D]``, ``tags [N, L]`` (the object of each word),
    ``mask [N, L]``; ``lengths [N]`` the mask's row sums on the CPU (None: read off the mask,
    which on a GPU waits for it)."""

    text: torch.Tensor
    tags: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor | None = None

    def host_lengths(self) -> torch.Tensor:
        return host_lengths(self.lengths, self.mask)


def host_lengths(lengths: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """``lengths`` where known on the host, else the mask's row sums (read back: a wait)."""
    return lengths if lengths is not None else mask.sum(1).cpu()


def send(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without a wait (copied from pinned memory)."""
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


@dataclass
class Objects:
    """An item's objects after projection: ``reps [B, K, object_dim]``, ``mask [B, K]``."""

    reps: torch.Tensor
    mask: torch.Tensor


@dataclass
class Contextualized:
    """N (query, response) pairs after grounding and attention; all ``[N, Lr, *]``."""

    response: torch.Tensor  # [N, Lr, 2h]
    attended_query: torch.Tensor  # [N, Lr, 2h]
    attended_objects: torch.Tensor  # [N, Lr, object_dim]
    mask: torch.Tensor  # [N, Lr] bool
    lengths: torch.Tensor | None  # [N] on the CPU (None: unknown there)


class R2CBackbone(nn.Module):
    def __init__(self, config: BackboneConfig, text_dim: int):
        super().__init__()
        self.config = c = config
        h2 = 2 * c.hidden
        self.object_norm = (
            nn.BatchNorm1d(OBJECT_FEATURE_DIM, affine=False)
            if c.normalize_objects
            else nn.Identity()
        )
        self.class_embed = nn.Embedding(NUM_CLASSES, c.class_embed_dim)
        self.object_proj = nn.Sequential(
            nn.Dropout(c.object_dropout),
            nn.Linear(OBJECT_FEATURE_DIM + c.class_embed_dim, c.object_dim),
            nn.ReLU(),
        )
        self.grounding = nn.LSTM(
            text_dim + c.object_dim, c.hidden, batch_first=True, bidirectional=True
        )
        self.query_attention = nn.Parameter(nn.init.xavier_uniform_(torch.empty(h2, h2)))
        self.object_attention = nn.Parameter(nn.init.xavier_uniform_(torch.empty(h2, c.object_dim)))
        self.reasoning = nn.LSTM(
            h2 + c.object_dim + h2, c.hidden, num_layers=2, batch_first=True, bidirectional=True
        )
        self.final_mlp = nn.Sequential(
            nn.Dropout(c.mlp_dropout),
            nn.Linear(3 * h2, c.mlp_dim),
            nn.ReLU(),
            nn.Dropout(c.mlp_dropout),
            nn.Linear(c.mlp_dim, 1),
        )
        if c.r2c_init:
            _r2c_init(self)

    def encode_objects(
        self, features: torch.Tensor, index: torch.Tensor, classes: torch.Tensor, mask: torch.Tensor
    ) -> Objects:
        """``features [M, 2048]``: the batch's objects, packed; ``index [B, K]``: the row of
        each slot; ``classes``, ``mask [B, K]`` -> projected objects. The features are
        standardised over the real objects only (the packed rows), then laid out in slots."""
        if self.config.zero_object_features:
            slots = features.new_zeros(*index.shape, features.shape[-1])
        else:
            slots = self._standardize(features)[index]  # [B, K, 2048]
        reps = self.object_proj(torch.cat([slots, self.class_embed(classes)], dim=-1))
        return Objects(reps, mask)

    def _standardize(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows [M, 2048]``, the batch's real objects. In training, a batch of fewer than 2
        objects (batch size 1 with one object) has no spread to standardise by: BatchNorm's
        running statistics stand in, and are left unchanged."""
        norm = self.object_norm
        if isinstance(norm, nn.BatchNorm1d) and norm.training and rows.shape[0] < 2:
            return F.batch_norm(
                rows, norm.running_mean, norm.running_var, training=False, eps=norm.eps
            )
        return norm(rows)

    def contextualize(
        self, query: Sentences, response: Sentences, objects: Objects, item_of_pair: torch.Tensor
    ) -> Contextualized:
        """Ground and attend N pairs; ``item_of_pair [N]`` is the item (row of ``objects``) each
        pair belongs to."""
        obj = objects.reps[item_of_pair]  # [N, K, od]
        obj_mask = objects.mask[item_of_pair]
        q, r = self._ground(query, response, obj)  # [N, Lq, 2h], [N, Lr, 2h]
        attended_query = _attend(r, self.query_attention, q, query.mask)
        attended_objects = _attend(r, self.object_attention, obj, obj_mask)
        return Contextualized(r, attended_query, attended_objects, response.mask, response.lengths)

    def reason(self, x: Contextualized) -> torch.Tensor:
        """Contextualised pairs -> one logit each, ``[N]``."""
        inputs = torch.cat([x.response, x.attended_objects, x.attended_query], dim=-1)
        reasoned = self._lstm(self.reasoning, inputs, host_lengths(x.lengths, x.mask))
        pooled = torch.cat([reasoned, x.response, x.attended_query], dim=-1)
        pooled = pooled.masked_fill(~x.mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        return self.final_mlp(pooled).squeeze(-1)

    def _ground(
        self, query: Sentences, response: Sentences, obj: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sentences of each pair through the grounding BiLSTM, in one call:
        ``[N, Lq, 2h]``, ``[N, Lr, 2h]``. The input is written once, straight into its sorted
        rows (no padded copies of the two halves, no sorted copy of the whole)."""
        n, lq, lr = query.text.shape[0], query.text.shape[1], response.text.shape[1]
        order = _sort(torch.cat([query.host_lengths(), response.host_lengths()]), obj.device)
        x = obj.new_zeros(2 * n, max(lq, lr), query.text.shape[2] + obj.shape[2])
        for s, rows in ((query, order.position[:n]), (response, order.position[n:])):
            words = torch.gather(obj, 1, s.tags.unsqueeze(-1).expand(-1, -1, obj.shape[-1]))
            x[rows, : s.text.shape[1]] = torch.cat([s.text, words], dim=-1)
        out = self._packed(self.grounding, x, order).index_select(0, order.position)
        return out[:n, :lq], out[n:, :lr]

    def _lstm(self, lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``x [N, L, d]``, ``lengths [N]`` on the CPU -> ``[N, L, out]``, zero past each
        length."""
        order = _sort(lengths, x.device)
        return self._packed(lstm, x.index_select(0, order.order), order).index_select(
            0, order.position
        )

    def _packed(self, lstm: nn.LSTM, x: torch.Tensor, order: _Sorted) -> torch.Tensor:
        """``x [N, L, d]`` already in ``order``'s rows -> the LSTM's ``[N, L, out]``, same
        rows."""
        if self.training and self.config.rnn_dropout > 0:  # one dropout mask per sequence
            keep = 1 - self.config.rnn_dropout
            x = x * torch.bernoulli(x.new_full((x.shape[0], 1, x.shape[2]), keep)) / keep
        out, _ = lstm(pack_padded_sequence(x, order.lengths, batch_first=True))
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


@dataclass
class _Sorted:
    """N sequences sorted longest first, as packing needs them."""

    lengths: torch.Tensor  # [N] sorted, on the CPU
    order: torch.Tensor  # [N] on the device: sorted row i is sequence order[i]
    position: torch.Tensor  # [N] on the device: sequence j is sorted row position[j]


def _sort(lengths: torch.Tensor, device: torch.device) -> _Sorted:
    """Sort on the host and send the permutation to the device without a wait
    (``pack_padded_sequence(enforce_sorted=False)`` would copy it there synchronously)."""
    lengths = lengths.clamp(min=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    both = send(torch.cat([order, torch.argsort(order)]), device)  # the sort and its inverse
    return _Sorted(lengths[order], both[: len(order)], both[len(order) :])


def _r2c_init(backbone: R2CBackbone) -> None:
    """R2C's initialisation of the LSTMs and the final MLP."""
    for lstm in (backbone.grounding, backbone.reasoning):
        _r2c_init_lstm(lstm)
    for layer in backbone.final_mlp:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def _r2c_init_lstm(lstm: nn.LSTM) -> None:
    """AllenNLP's initialisers as R2C configured them: ``weight_ih`` xavier-uniform, ``weight_hh``
    orthogonal (each the whole ``[4h, *]`` matrix, as AllenNLP applies them), ``bias_ih`` 0,
    ``bias_hh`` 0 with the forget gate's slice (gates i, f, g, o) 1."""
    h = lstm.hidden_size
    for name, param in lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(param)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(param)
        else:
            nn.init.zeros_(param)
            if name.startswith("bias_hh"):
                nn.init.ones_(param[h : 2 * h])


def _attend(
    source: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor:
    """Bilinear attention: for each source row, a softmax over the target rows.
    ``source [N, Ls, ds]``, ``weight [ds, dt]``, ``target [N, Lt, dt]`` -> ``[N, Ls, dt]``."""
    scores = torch.einsum("nsd,de,nte->nst", source, weight, target)
    scores = scores.masked_fill(~target_mask.unsqueeze(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ target
