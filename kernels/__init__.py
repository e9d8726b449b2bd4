"""Fused GPU kernels for the hot paths, each with a pure-torch twin in :mod:`embedforge.kernels.reference`.

Call these functions (not the per-kernel modules): each asks ``embedforge.device.kernel_backend()`` once —
compiled Triton on CUDA tensors, the torch reference on CPU, Triton's interpreter when forced
(``EMBEDFORGE_KERNELS=interpret`` or ``TRITON_INTERPRET=1``) — and Triton is imported only when it is used.

>>> vecs = pool_normalize(hidden, attention_mask, dim=256)        # (B, 256) fp32, unit rows
>>> scores, ids = similarity_topk(queries, corpus, k=100)         # never builds the (q × n) matrix
>>> codes, scales = quantize_int8(corpus); bits = pack_binary(corpus)
>>> _, cand = int8_topk(*quantize_int8(queries), codes, scales, k=400)   # or hamming_topk(...)
>>> scores, ids = rescore(queries, corpus, cand, k=100)
"""

from __future__ import annotations

import torch

from embedforge.kernels import reference
from embedforge.kernels.launch import resolve_backend

FUSED_K_MAX = 256
"""Largest k the compiled top-k kernels take on CUDA. Beyond it the unrolled bitonic network (log²K stages on a
[rows, K] tile) takes minutes to compile and spills registers, so larger k runs the blocked torch reference on
the GPU instead (exact, same tie order, memory bounded). The kernels themselves take any k (interpreter-tested
at 2048 and 2500)."""

__all__ = ["FUSED_K_MAX", "pool_normalize", "similarity_topk", "quantize_int8", "int8_topk", "pack_binary", "hamming_topk",
           "rescore", "reference"]


def pool_normalize(hidden: torch.Tensor, mask: torch.Tensor, dim: int | None = None, normalize: bool = True, *,
                   backend: str | None = None) -> torch.Tensor:
    """Masked mean over tokens (B, T, H) → first ``dim`` features → L2-normalized fp32 (B, dim)."""
    chosen = resolve_backend(hidden, backend)
    if chosen == "torch":
        return reference.pool_normalize(hidden, mask, dim, normalize)
    from embedforge.kernels import pooling

    return pooling.pool_normalize(hidden, mask, dim, normalize, backend=chosen)


def topk_backend(chosen: str, k: int) -> str:
    """``torch`` instead of compiled ``triton`` when ``k`` exceeds :data:`FUSED_K_MAX`; else ``chosen``."""
    return "torch" if chosen == "triton" and k > FUSED_K_MAX else chosen


def similarity_topk(queries: torch.Tensor, corpus: torch.Tensor, k: int, *,
                    backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-``k``: ``(scores fp32 (q, k'), ids int64 (q, k'))``, ties to the lower id."""
    chosen = topk_backend(resolve_backend(queries, backend), k)
    if chosen == "torch":
        if queries.shape[1] != corpus.shape[1] or corpus.shape[0] == 0:
            raise ValueError(f"cannot search a corpus of shape {tuple(corpus.shape)} with queries of shape "
                             f"{tuple(queries.shape)}")
        return reference.similarity_topk(queries, corpus, k)
    from embedforge.kernels import topk

    return topk.similarity_topk(queries, corpus, k, backend=chosen)


def quantize_int8(x: torch.Tensor, *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: ``(codes int8 (n, d), scales fp32 (n,))``, ``x ≈ codes * scales[:, None]``."""
    chosen = resolve_backend(x, backend)
    if chosen == "torch":
        return reference.quantize_int8(x)
    from embedforge.kernels import quant

    return quant.quantize_int8(x, backend=chosen)


def int8_topk(q_codes: torch.Tensor, q_scales: torch.Tensor, c_codes: torch.Tensor, c_scales: torch.Tensor, k: int,
              *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` by int8 scores ``float(q·c) * q_scale * c_scale``: ``(scores fp32, ids int64)``."""
    chosen = topk_backend(resolve_backend(q_codes, backend), k)
    if chosen == "torch":
        return reference.int8_topk(q_codes, q_scales, c_codes, c_scales, k)
    from embedforge.kernels import quant

    return quant.int8_topk(q_codes, q_scales, c_codes, c_scales, k, backend=chosen)


def pack_binary(x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Sign bits packed 8 per byte (``np.packbits`` layout): uint8 ``(n, ceil(d / 8))``."""
    chosen = resolve_backend(x, backend)
    if chosen == "torch":
        return reference.pack_binary(x)
    from embedforge.kernels import binary

    return binary.pack_binary(x, backend=chosen)


def hamming_topk(q_bits: torch.Tensor, c_bits: torch.Tensor, k: int, *,
                 backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest packed codes by Hamming distance: ``(distances int32 ascending, ids int64)``."""
    chosen = topk_backend(resolve_backend(q_bits, backend), k)
    if chosen == "torch":
        return reference.hamming_topk(q_bits, c_bits, k)
    from embedforge.kernels import hamming

    return hamming.hamming_topk(q_bits, c_bits, k, backend=chosen)


def rescore(queries: torch.Tensor, corpus: torch.Tensor, candidates: torch.Tensor, k: int, *,
            backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact fp32 top-``k`` among each query's ``candidates`` (int64, -1 = none): ``(scores, ids)``."""
    chosen = resolve_backend(queries, backend)
    if chosen == "torch":
        return reference.rescore(queries, corpus, candidates, k)
    from embedforge.kernels import rescoring

    return rescoring.rescore(queries, corpus, candidates, k, backend=chosen)
