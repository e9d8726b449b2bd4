"""Pure-torch references for every kernel: the CPU fallback and the test oracle.

Each function here states the exact semantics its Triton twin must reproduce (same accumulation dtype, same
rounding, same tie-breaking). Top-k selection everywhere orders by score, then by LOWER corpus id on ties —
the order FAISS uses — made deterministic by packing ``(score, id)`` into one int64 key (:func:`topk_keys`),
which is what the Triton kernels write too.
"""

from __future__ import annotations

import numpy as np
import torch

_LOW32 = 0xFFFFFFFF
_LOW31 = 0x7FFFFFFF


def topk_keys(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Pack fp32 ``scores`` and int64 ``ids`` (< 2**32) into int64 keys: larger key = higher score, then lower id.

    High word: the score's bits as a signed int32 whose order is the float order (negative floats get their 31
    magnitude bits flipped); low word: ``2**32 - 1 - id``. The same keys the Triton kernels write.
    """
    bits = (scores.to(torch.float32) + 0.0).contiguous().view(torch.int32)  # + 0.0: -0.0 ties with +0.0
    ordered = bits ^ ((bits >> 31) & _LOW31)
    return (ordered.to(torch.int64) << 32) | (_LOW32 - ids.to(torch.int64))


def decode_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`topk_keys`: ``(scores fp32, ids int64)``."""
    ordered = (keys >> 32).to(torch.int32)
    bits = ordered ^ ((ordered >> 31) & _LOW31)
    return bits.view(torch.float32), _LOW32 - (keys & _LOW32)


def best_keys(keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest packed keys along the last dim, decoded: ``(scores, ids)`` sorted, lower id on ties.

    Keeping most of a short row (rescoring a few extra candidates) on the CPU, numpy's int64 sort is ~30x faster
    than ``torch.topk``; wide rows, and tensors on a GPU, go through ``torch.topk``. Same result either way.
    """
    k = min(k, keys.shape[-1])
    if not keys.is_cuda and keys.shape[-1] <= 4 * k:
        best = torch.from_numpy(np.sort(keys.numpy(), axis=-1)[..., ::-1][..., :k].copy())
    else:
        best = torch.topk(keys, k, dim=-1, largest=True, sorted=True).values
    return decode_keys(best)


def select_topk(scores: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` along the last dim of ``scores`` (fp32) with ``ids`` (broadcastable), sorted, lower id on ties."""
    return best_keys(topk_keys(scores, ids.expand_as(scores)), k)


def merge_topk(best_s: torch.Tensor | None, best_i: torch.Tensor | None, scores: torch.Tensor, ids: torch.Tensor,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-``k`` per row, unordered: merge candidates ``(scores, ids)`` into ``(best_s, best_i)``.

    ``best_s``/``best_i`` are ``None`` before the first block. The torch twin of the kernels' register merge
    (:func:`embedforge.kernels.selection.merge_running_topk`) for callers that stream corpus blocks; the order
    among equal scores is not fixed here — callers that need it rescore the survivors and sort them with
    :func:`select_topk`.

    >>> best_s = best_i = None
    >>> for start in range(0, n, block):
    ...     s, i = torch.topk(q @ corpus[start:start + block].T, k, dim=1, sorted=False)
    ...     best_s, best_i = merge_topk(best_s, best_i, s, i + start, k)
    """
    if best_s is None or best_i is None:
        return scores, ids
    s, pos = torch.topk(torch.cat([best_s, scores], 1), min(k, best_s.shape[1] + scores.shape[1]), dim=1,
                        sorted=False)
    return s, torch.gather(torch.cat([best_i, ids], 1), 1, pos)


def pool_normalize(hidden: torch.Tensor, mask: torch.Tensor, dim: int | None = None,
                   normalize: bool = True) -> torch.Tensor:
    """Masked mean over tokens of ``hidden`` (B, T, H) → first ``dim`` features → L2-normalized, fp32 (B, dim).

    Matches sentence-transformers' mean pooling: sum in fp32, divided by ``max(mask sum, 1e-9)``; the norm is
    clamped at 1e-12 (``F.normalize``), so a padding-only row comes out as zeros.
    """
    dim = dim or hidden.shape[-1]
    states = hidden[..., :dim].to(torch.float32)
    weights = mask.to(torch.float32).unsqueeze(-1)
    mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if normalize:
        mean = mean / mean.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return mean


def query_block(n_corpus: int, bytes_per_pair: int, budget: int = 1 << 30) -> int:
    """Queries per block so that the block's (queries × corpus) temporaries stay within ``budget`` bytes."""
    return max(1, min(1024, budget // max(1, n_corpus * bytes_per_pair)))


def similarity_topk(queries: torch.Tensor, corpus: torch.Tensor, k: int,
                    block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-``k``: ``(scores fp32 (q, k'), ids int64 (q, k'))``, k' = min(k, n), fp32 math."""
    block = block or query_block(corpus.shape[0], 4 + 8 + 8)  # scores, keys, key temporaries
    corpus32 = corpus.to(torch.float32)
    ids = torch.arange(corpus.shape[0], device=corpus.device)
    out_s, out_i = [], []
    for start in range(0, queries.shape[0], block):
        scores = queries[start:start + block].to(torch.float32) @ corpus32.T
        top_s, top_i = select_topk(scores, ids, k)
        out_s.append(top_s)
        out_i.append(top_i)
    return torch.cat(out_s), torch.cat(out_i)


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``scale = max|x| / 127``, ``codes = round_half_away(x / scale)`` in [-127, 127].

    ``x ≈ codes * scale``; both divisions are IEEE-rounded fp32 (tensor / tensor: torch turns ``tensor / scalar``
    into a multiply by the reciprocal). An all-zero row gets scale 0 and zero codes.
    """
    x32 = x.to(torch.float32)
    amax = x32.abs().amax(dim=1)
    scale = amax / torch.full_like(amax, 127.0)
    y = x32 / torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]
    codes = torch.sign(y) * torch.floor(y.abs() + 0.5)
    return codes.clamp(-127, 127).to(torch.int8), scale


def int8_scores(q_codes: torch.Tensor, q_scales: torch.Tensor, c_codes: torch.Tensor,
                c_scales: torch.Tensor) -> torch.Tensor:
    """Approximate inner products from int8 codes: ``float(int32 dot) * q_scale * c_scale`` (fp32, that order)."""
    dots = (q_codes.to(torch.float64) @ c_codes.to(torch.float64).T).to(torch.float32)  # exact: |dot| < 2**53
    return dots * q_scales.to(torch.float32)[:, None] * c_scales.to(torch.float32)[None, :]


def int8_topk(q_codes: torch.Tensor, q_scales: torch.Tensor, c_codes: torch.Tensor, c_scales: torch.Tensor,
              k: int, block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` corpus rows by :func:`int8_scores`: ``(scores fp32, ids int64)``."""
    block = block or query_block(c_codes.shape[0], 8 + 4 + 8 + 8)
    ids = torch.arange(c_codes.shape[0], device=c_codes.device)
    out_s, out_i = [], []
    for start in range(0, q_codes.shape[0], block):
        scores = int8_scores(q_codes[start:start + block], q_scales[start:start + block], c_codes, c_scales)
        top_s, top_i = select_topk(scores, ids, k)
        out_s.append(top_s)
        out_i.append(top_i)
    return torch.cat(out_s), torch.cat(out_i)


def pack_binary(x: torch.Tensor) -> torch.Tensor:
    """Sign bits (``x > 0``) packed 8 per byte, first feature in the most significant bit (``np.packbits``).

    ``(n, d)`` → uint8 ``(n, ceil(d / 8))``; missing bits of the last byte are 0.
    """
    n, d = x.shape
    nbytes = (d + 7) // 8
    bits = torch.zeros(n, nbytes * 8, dtype=torch.int32, device=x.device)
    bits[:, :d] = (x > 0).to(torch.int32)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=x.device)
    return (bits.view(n, nbytes, 8) * weights).sum(-1).to(torch.uint8)


def hamming_distances(q_bits: torch.Tensor, c_bits: torch.Tensor) -> torch.Tensor:
    """Hamming distances (int32 (q, n)) between packed uint8 codes."""
    table = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int32, device=q_bits.device)
    xor = q_bits.to(torch.int32)[:, None, :] ^ c_bits.to(torch.int32)[None, :, :]
    return table[xor].sum(-1, dtype=torch.int32)


def hamming_topk(q_bits: torch.Tensor, c_bits: torch.Tensor, k: int,
                 block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest corpus codes by Hamming distance: ``(distances int32 ascending, ids int64)``."""
    block = block or query_block(c_bits.shape[0], 3 * 4 * c_bits.shape[1] + 24)  # XOR bytes as int32 + counts
    ids = torch.arange(c_bits.shape[0], device=c_bits.device)
    out_d, out_i = [], []
    for start in range(0, q_bits.shape[0], block):
        dist = hamming_distances(q_bits[start:start + block], c_bits)
        top_s, top_i = select_topk(-dist.to(torch.float32), ids, k)
        out_d.append((-top_s).to(torch.int32))
        out_i.append(top_i)
    return torch.cat(out_d), torch.cat(out_i)


def rescore(queries: torch.Tensor, corpus: torch.Tensor, candidates: torch.Tensor,
            k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact fp32 inner products over each query's ``candidates`` (int64 (q, c), -1 = none), top-``k`` of them.

    Returns ``(scores fp32 (q, k'), ids int64 (q, k'))``, k' = min(k, c); slots without a candidate hold
    score ``-inf`` and id -1.
    """
    valid = candidates >= 0
    rows = corpus[candidates.clamp(min=0)].to(torch.float32)  # (q, c, d): what the fused kernel avoids
    scores = torch.einsum("qd,qcd->qc", queries.to(torch.float32), rows)
    return select_candidates(torch.where(valid, scores, torch.full_like(scores, float("-inf"))), candidates, k)


def select_candidates(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of candidate ``scores`` (fp32 (q, c), ``-inf`` where ``candidates`` is -1) → ``(scores, ids)``."""
    top_s, top_i = select_topk(scores, candidates.clamp(min=0), k)
    return top_s, torch.where(torch.isneginf(top_s), torch.full_like(top_i, -1), top_i)
