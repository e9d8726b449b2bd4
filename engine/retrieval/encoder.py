"""The one encoder: every stage that embeds text (mine, evaluate, embed, the round-trip filter) uses this.

Inputs are sorted by length and batched by a token budget (padded tokens per batch), not a fixed count, so
short texts go in large batches and long ones in small batches. Vectors can be truncated to a Matryoshka
dimension and re-normalized.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine import device as dev
from engine.models import model_id as compute_model_id
from engine.models import resolve_model

log = logging.getLogger("embedforge.encoder")


def truncate_normalize(vectors: np.ndarray, dim: int | None, normalize: bool = True) -> np.ndarray:
    """Keep the first ``dim`` components (Matryoshka) and L2-normalize rows."""
    if dim is not None:
        if dim > vectors.shape[1]:
            raise ValueError(f"dimension {dim} is larger than the model's {vectors.shape[1]}")
        vectors = vectors[:, :dim]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_batch: int = 512) -> list[list[int]]:
    """Index batches over inputs sorted by length (longest first) so that ``len(batch) * longest <= max_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = max(lengths[i], 1)
        if current and (max(longest, n) * (len(current) + 1) > max_tokens or len(current) >= max_batch):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


class Encoder:
    """A sentence-transformers model behind a token-budget batcher.

    >>> enc = Encoder("all-MiniLM-L6-v2")
    >>> enc.encode(["a query", "a passage"], dim=128).shape
    (2, 128)
    """

    def __init__(self, model: str | Path, *, device: str = "auto", dtype: str = "fp32",
                 max_batch_tokens: int = 16384, max_seq_length: int | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.path = resolve_model(str(model))
        self.device = dev.device(device)
        self.dtype = dev.compute_dtype(self.device, dtype) if dtype != "auto" else dev.compute_dtype(self.device)
        self.model = SentenceTransformer(str(self.path), device=str(self.device), local_files_only=True,
                                         trust_remote_code=False)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.model.eval()
        self.model_id = compute_model_id(self.path)
        self.dim = int(self.model.get_embedding_dimension())
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer = self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts (with special tokens, capped at the model's max sequence length)."""
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=True,
                             max_length=self.max_seq_length)["input_ids"]
        return [len(ids) for ids in enc]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], *, dim: int | None = None, normalize: bool = True,
               max_batch_tokens: int | None = None) -> np.ndarray:
        """Embeddings of ``texts`` as float32 ``(n, dim)``, in input order."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return truncate_normalize(out, dim, normalize)
        lengths = self.token_lengths(texts)
        for batch in token_budget_batches(lengths, max_batch_tokens or self.max_batch_tokens):
            features = self.model.preprocess([texts[i] for i in batch])
            features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            with dev.autocast(self.device, self.dtype):
                emb = self.model.forward(features)["sentence_embedding"]
            out[batch] = emb.float().cpu().numpy()
        return truncate_normalize(out, dim, normalize)


_LOADED: dict[tuple[str, str, str], Encoder] = {}


def get_encoder(model: str | Path, *, device: str = "auto", dtype: str = "fp32") -> Encoder:
    """A process-wide shared :class:`Encoder` per (model, device, dtype): load a model once."""
    key = (str(resolve_model(str(model))), device, dtype)
    if key not in _LOADED:
        _LOADED[key] = Encoder(model, device=device, dtype=dtype)
    return _LOADED[key]
