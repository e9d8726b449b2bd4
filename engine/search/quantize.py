"""The one quantization rule (int8 and binary) and the quantized search that reads its codes.

The rule is the kernels' own (:mod:`embedforge.kernels.reference`, bit-exact with the Triton kernels):

- **int8**, per row, symmetric: ``scale = max|v| / 127`` (IEEE float32 division), ``codes = v / scale`` rounded
  half away from zero, in ``[-127, 127]``; ``v ≈ codes * scale``; an all-zero row has scale 0 and zero codes.
- **binary**: sign bits (``v > 0``), 8 per byte, first feature in the most significant bit (``np.packbits``'
  layout, which FAISS binary indexes read too).

The embed stage stores exactly these codes (the ``int8`` + ``scale`` and ``binary`` columns of the embeddings
contract), and :class:`QuantizedSearcher` — the evaluation's quantized rows — scores exactly these codes with the
quantized kernels, so a store is searched the way it was measured:

- ``int8``: queries quantized by the same rule, top-k by ``float(q·c) * q_scale * c_scale``
  (:func:`embedforge.kernels.int8_topk`; int32 accumulation in the Triton kernel on CUDA);
- ``binary``: top-k by Hamming distance over the packed codes (:func:`embedforge.kernels.hamming_topk`), score
  ``-distance``; no rescoring;
- ``binary_rescore``: ``binary`` fetches ``rescore_multiplier × k`` candidates, then the float query is scored
  against the candidates' ±1 sign vectors (:func:`embedforge.kernels.rescore`; only the candidates are
  unpacked, the index stays binary — the sentence-transformers quantization recipe);
- ``none``: exact float search (:func:`embedforge.search.index.search`), and a FAISS flat index for latency.

Code and query tensors live on the job's device: compiled Triton kernels on CUDA, the torch references on CPU.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

import embedforge.kernels as kernels
from embedforge import device as dev
from embedforge.search import faiss_indexes
from embedforge.search.index import search as exact_search

Quantization = Literal["none", "int8", "binary", "binary_rescore"]
QUANTIZATIONS: tuple[str, ...] = ("none", "int8", "binary", "binary_rescore")


def _rows(vectors: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes int8 (n, d), scales float32 (n,))`` by the one int8 rule; ``vectors ≈ codes * scales[:, None]``.

    >>> codes, scales = quantize_int8(np.array([[0.5, -1.0, 0.25]], dtype=np.float32))
    >>> codes.tolist(), scales.tolist()   # scale = 1/127; 0.25 * 127 = 31.75 → 32
    ([[64, -127, 32]], [0.007874015718698502])
    """
    codes, scales = kernels.quantize_int8(_rows(vectors), backend="torch")
    return codes.numpy(), scales.numpy()


def pack_binary(vectors: np.ndarray) -> np.ndarray:
    """Sign bits packed 8 per byte: ``uint8 (n, ceil(d / 8))``, the ``np.packbits(vectors > 0, axis=1)`` layout."""
    return kernels.pack_binary(_rows(vectors), backend="torch").numpy()


def unpack_signs(codes: np.ndarray, dim: int) -> np.ndarray:
    """Packed sign bits → ±1 float32 vectors ``(n, dim)`` (bit 1 → +1, bit 0 → -1)."""
    return np.unpackbits(codes, axis=1, count=dim).astype(np.float32) * 2.0 - 1.0


class QuantizedSearcher:
    """One corpus at one dimension under one quantization: build once, search many query sets.

    >>> s = QuantizedSearcher(corpus_vectors, "int8")
    >>> scores, ids = s.search(query_vectors, k=100)
    """

    def __init__(self, corpus: np.ndarray, quantization: str, rescore_multiplier: int = 4,
                 device: str = "auto") -> None:
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization '{quantization}' (known: {', '.join(QUANTIZATIONS)})")
        self.quantization = quantization
        self.corpus = np.ascontiguousarray(corpus, dtype=np.float32)
        self.rescore_multiplier = rescore_multiplier
        self.device = dev.device(device)
        self._flat = None
        if quantization == "none":
            self._flat, _ = faiss_indexes.build("flat", self.corpus)
        elif quantization == "int8":
            codes, scales = quantize_int8(self.corpus)
            self._codes, self._scales = torch.from_numpy(codes).to(self.device), torch.from_numpy(scales).to(self.device)
        else:
            self._bits = pack_binary(self.corpus)
            self._codes = torch.from_numpy(self._bits).to(self.device)

    @property
    def bytes(self) -> int:
        """Bytes of the index: the serialized FAISS flat index, or the codes (+ int8 scales) the kernels read."""
        if self._flat is not None:
            return faiss_indexes.index_bytes(self._flat)
        if self.quantization == "int8":
            return int(self._codes.numel() + 4 * self._scales.numel())
        return int(self._codes.numel())

    def search(self, queries: np.ndarray, k: int, prebuilt: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query: ``(scores float32 (q, k'), ids int64 (q, k'))``; higher score is better.

        Float search goes through the one search API (:func:`embedforge.search.index.search`), which builds its
        index per call; ``prebuilt=True`` searches this object's FAISS flat index instead (for latency timing).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.corpus.shape[0])
        if self.quantization == "none":
            if not prebuilt:
                return exact_search(queries, self.corpus, k)
            scores, ids = self._flat.search(queries, k)
            return scores, ids.astype(np.int64)
        if self.quantization == "int8":
            q_codes, q_scales = (torch.from_numpy(a).to(self.device) for a in quantize_int8(queries))
            scores, ids = kernels.int8_topk(q_codes, q_scales, self._codes, self._scales, k)
            return scores.cpu().numpy(), ids.cpu().numpy()
        q_bits = torch.from_numpy(pack_binary(queries)).to(self.device)
        if self.quantization == "binary":
            dist, ids = kernels.hamming_topk(q_bits, self._codes, k)
            return (-dist).to(torch.float32).cpu().numpy(), ids.cpu().numpy()
        n_cand = min(k * self.rescore_multiplier, self.corpus.shape[0])
        _, cand = kernels.hamming_topk(q_bits, self._codes, n_cand)
        cand = cand.cpu().numpy()
        unique, slots = np.unique(cand, return_inverse=True)  # unpack only the candidates' sign vectors
        signs = torch.from_numpy(unpack_signs(self._bits[unique], queries.shape[1])).to(self.device)
        slots = torch.from_numpy(slots.reshape(cand.shape).astype(np.int64)).to(self.device)
        scores, picked = kernels.rescore(torch.from_numpy(queries).to(self.device), signs, slots, k)
        return scores.cpu().numpy(), unique[picked.cpu().numpy()]
