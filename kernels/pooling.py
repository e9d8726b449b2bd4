"""Fused pooling: masked mean over tokens + Matryoshka truncation + L2 normalization in one pass (forward).

One program per sequence streams its token states ``BLOCK_T`` tokens at a time, reading only the first ``dim``
features (truncation happens before any byte is loaded) and skipping padded tokens (masked loads issue no memory
traffic), sums in fp32, divides by the token count and normalizes — the (B, T, H) tensor is read once and only
(B, dim) fp32 is written. The unfused torch sequence (mask multiply, sum, divide, slice, norm, divide) makes
~4 passes over (B, T, H) plus temporaries. Semantics: ``embedforge.kernels.reference.pool_normalize``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from embedforge.kernels.launch import launcher


@triton.jit
def _pool_normalize_kernel(h_ptr, m_ptr, out_ptr, n_tokens, dim, stride_hb, stride_ht, stride_mb, stride_mt,
                           stride_ob, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, NORMALIZE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    h_ok = offs_h < dim
    total = tl.zeros([BLOCK_H], dtype=tl.float32)
    count = tl.zeros([BLOCK_T], dtype=tl.float32)
    for t0 in range(0, n_tokens, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        t_ok = offs_t < n_tokens
        weight = tl.load(m_ptr + row * stride_mb + offs_t * stride_mt, mask=t_ok, other=0).to(tl.float32)
        live = t_ok & (weight != 0.0)
        states = tl.load(h_ptr + row * stride_hb + offs_t[:, None].to(tl.int64) * stride_ht + offs_h[None, :],
                         mask=live[:, None] & h_ok[None, :], other=0.0).to(tl.float32)
        total += tl.sum(states * weight[:, None], axis=0)
        count += weight
    mean = total / tl.maximum(tl.sum(count, axis=0), 1e-9)
    if NORMALIZE:
        mean = mean / tl.maximum(tl.sqrt(tl.sum(mean * mean, axis=0)), 1e-12)
    tl.store(out_ptr + row * stride_ob + offs_h, mean, mask=h_ok)


def launch_config(n_tokens: int, dim: int) -> dict[str, int]:
    """Block sizes and warps: the whole kept row in one block, ≈ 8k elements per token tile."""
    block_h = triton.next_power_of_2(dim)
    block_t = max(1, min(triton.next_power_of_2(max(n_tokens, 1)), 8192 // block_h))
    return {"BLOCK_T": block_t, "BLOCK_H": block_h, "num_warps": 4 if block_h <= 1024 else 8}


def launch_pool_normalize(hidden: torch.Tensor, mask: torch.Tensor, out: torch.Tensor, normalize: bool,
                          backend: str) -> None:
    """Fill ``out`` (fp32 ``(B, dim)``, dim = ``out.shape[1]``) from ``hidden`` (B, T, H) and ``mask`` (B, T)."""
    batch, n_tokens, _ = hidden.shape
    dim = out.shape[1]
    launcher(_pool_normalize_kernel, backend)[(batch,)](
        hidden, mask, out, n_tokens, dim, hidden.stride(0), hidden.stride(1), mask.stride(0), mask.stride(1),
        out.stride(0), NORMALIZE=normalize, **launch_config(n_tokens, dim))


def pool_normalize(hidden: torch.Tensor, mask: torch.Tensor, dim: int | None = None, normalize: bool = True, *,
                   backend: str = "triton") -> torch.Tensor:
    """Mean-pool ``hidden`` (B, T, H; fp32/fp16/bf16) over ``mask`` (B, T), keep ``dim`` features, L2-normalize.

    Returns fp32 ``(B, dim)``; a row whose mask is all zero comes out as zeros.
    """
    if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(f"expected hidden (B, T, H) and mask (B, T), got {tuple(hidden.shape)} and "
                         f"{tuple(mask.shape)}")
    dim = dim or hidden.shape[2]
    if not 0 < dim <= hidden.shape[2]:
        raise ValueError(f"dim={dim} must be in [1, {hidden.shape[2]}] (the model's hidden size)")
    if hidden.stride(2) != 1:
        hidden = hidden.contiguous()
    out = torch.empty((hidden.shape[0], dim), dtype=torch.float32, device=hidden.device)
    if hidden.shape[0] > 0:
        launch_pool_normalize(hidden, mask, out, normalize, backend)
    return out
