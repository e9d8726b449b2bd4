"""Float rescoring of candidates: gather each query's candidate rows and take exact fp32 inner products.

The second stage after ``embedforge.kernels.quant.int8_topk`` or ``embedforge.kernels.hamming.hamming_topk``: the kernel gathers
candidate rows straight from the float corpus by id (``-1`` = no candidate) and reduces them against the query
tile, writing only a ``(q, c)`` score matrix — the torch sequence materializes the gathered ``(q, c, d)`` rows
first. The final top-``k`` over the c candidates is one ``torch.topk`` over packed keys (ties to the lower id).
Semantics: ``embedforge.kernels.reference.rescore``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from embedforge.kernels import reference
from embedforge.kernels.launch import launcher


@triton.jit
def _rescore_kernel(q_ptr, c_ptr, cand_ptr, out_ptr, n_q, n_cand, dim, stride_q, stride_c, stride_cand, stride_out,
                    BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    slots = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_bounds = (rows < n_q)[:, None] & (slots < n_cand)[None, :]
    ids = tl.load(cand_ptr + rows[:, None].to(tl.int64) * stride_cand + slots[None, :], mask=in_bounds, other=-1)
    valid = in_bounds & (ids >= 0)
    acc = tl.zeros([BLOCK_Q, BLOCK_C], dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_ok = offs_d < dim
        q = tl.load(q_ptr + rows[:, None].to(tl.int64) * stride_q + offs_d[None, :],
                    mask=(rows < n_q)[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        c = tl.load(c_ptr + ids[:, :, None] * stride_c + offs_d[None, None, :],
                    mask=valid[:, :, None] & d_ok[None, None, :], other=0.0).to(tl.float32)
        acc += tl.sum(q[:, None, :] * c, axis=2)
    scores = tl.where(valid, acc, float("-inf"))
    tl.store(out_ptr + rows[:, None].to(tl.int64) * stride_out + slots[None, :], scores, mask=in_bounds)


def launch_rescore(queries: torch.Tensor, corpus: torch.Tensor, candidates: torch.Tensor, out: torch.Tensor,
                   backend: str) -> None:
    """Fill ``out`` (fp32 (q, c)) with ``queries · corpus[candidates]`` (``-inf`` where the id is -1)."""
    n_q, n_cand = candidates.shape
    dim = queries.shape[1]
    config = launch_config(dim)
    grid = (triton.cdiv(n_q, config["BLOCK_Q"]), triton.cdiv(n_cand, config["BLOCK_C"]))
    launcher(_rescore_kernel, backend)[grid](
        queries, corpus, candidates, out, n_q, n_cand, dim, queries.stride(0), corpus.stride(0),
        candidates.stride(0), out.stride(0), **config)


def launch_config(dim: int) -> dict[str, int]:
    """Block sizes and warps: 16 queries × 32 candidates × 32 features of gathered rows per step."""
    return {"BLOCK_Q": 16, "BLOCK_C": 32, "BLOCK_D": min(32, triton.next_power_of_2(dim)), "num_warps": 4}


def rescore(queries: torch.Tensor, corpus: torch.Tensor, candidates: torch.Tensor, k: int, *,
            backend: str = "triton") -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each query's ``candidates`` (int64 (q, c), -1 = none) by exact fp32 inner product.

    Returns ``(scores fp32 (q, k'), ids int64 (q, k'))``, k' = min(k, c); empty slots are ``(-inf, -1)``.
    """
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"expected (q, d) queries and (n, d) corpus, got {tuple(queries.shape)} and "
                         f"{tuple(corpus.shape)}")
    if candidates.shape[0] != queries.shape[0]:
        raise ValueError(f"{candidates.shape[0]} candidate rows for {queries.shape[0]} queries")
    if candidates.numel() and int(candidates.max()) >= corpus.shape[0]:
        raise ValueError(f"candidate id {int(candidates.max())} is outside the corpus of {corpus.shape[0]} rows")
    candidates = candidates.to(torch.int64).contiguous()
    out = torch.empty(candidates.shape, dtype=torch.float32, device=queries.device)
    if out.numel():
        launch_rescore(queries.contiguous(), corpus.contiguous(), candidates, out, backend)
    return reference.select_candidates(out, candidates, k)
