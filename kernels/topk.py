"""Fused similarity + streaming top-k: query tiles × corpus tiles, never the full (q × n) score matrix.

Each program owns ``BLOCK_Q`` queries and one split of the corpus; it walks that split ``BLOCK_N`` corpus rows
at a time, computes the score tile with ``tl.dot`` (fp32 accumulation) and merges it into a running top-``K``
kept in registers (``embedforge.kernels.selection``). The per-split winners (``splits × q × K`` int64 keys, K = next power
of two ≥ k) are merged by one ``torch.topk`` over keys. Ties go to the lower corpus id, like FAISS and
``embedforge.kernels.reference.similarity_topk``. The kernel takes any k (FAISS-GPU stops at 2048), but past K = 256 the
running top-k no longer fits in registers and the unrolled network takes minutes to compile, so on CUDA the
public ``embedforge.kernels.similarity_topk`` sends k > ``embedforge.kernels.FUSED_K_MAX`` to the blocked torch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from embedforge.kernels import reference
from embedforge.kernels.launch import launcher
from embedforge.kernels.selection import load_tile, merge_running_topk, score_keys, split_tiles, store_keys


@triton.jit
def _similarity_topk_kernel(q_ptr, c_ptr, q_scale_ptr, c_scale_ptr, out_ptr, n_q, n_c, dim, stride_q, stride_c,
                            stride_split, stride_out_q, tiles_per_split,
                            BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            K: tl.constexpr, PRECISION: tl.constexpr, INT8: tl.constexpr,
                            UPCAST: tl.constexpr):
    pid_q = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    row_ok = rows < n_q
    running = tl.zeros([BLOCK_Q, K], dtype=tl.uint64)
    if INT8:
        q_scale = tl.load(q_scale_ptr + rows, mask=row_ok, other=0.0)
    first, last = split_tiles(split, tiles_per_split, n_c, BLOCK_N)
    for tile in range(first, last):
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < n_c
        acc = tl.zeros([BLOCK_Q, BLOCK_N], dtype=tl.int32 if INT8 else tl.float32)
        for d0 in range(0, dim, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d < dim
            q = load_tile(q_ptr, rows, row_ok, offs_d, d_ok, stride_q)
            c = load_tile(c_ptr, cols, col_ok, offs_d, d_ok, stride_c)
            if UPCAST:  # Triton's interpreter multiplies bf16 as raw bits: give it fp32
                q = q.to(tl.float32)
                c = c.to(tl.float32)
            if INT8:
                acc = tl.dot(q, tl.trans(c), acc, out_dtype=tl.int32)
            else:
                acc = tl.dot(q, tl.trans(c), acc, input_precision=PRECISION)
        if INT8:  # same operation order as kernels.reference.int8_scores
            c_scale = tl.load(c_scale_ptr + cols, mask=col_ok, other=0.0)
            scores = acc.to(tl.float32) * q_scale[:, None] * c_scale[None, :]
        else:
            scores = acc
        keys = score_keys(scores, cols[None, :], row_ok[:, None] & col_ok[None, :])
        running = merge_running_topk(running, keys, K)
    store_keys(out_ptr + split * stride_split, running, rows, n_q, stride_out_q, K)


def launch_similarity_topk(queries: torch.Tensor, corpus: torch.Tensor, out: torch.Tensor, backend: str,
                           q_scales: torch.Tensor | None = None, c_scales: torch.Tensor | None = None) -> None:
    """Fill ``out`` (int64 ``(splits, q, K)``) with each split's top-K keys; K and splits come from ``out.shape``.

    With int8 ``queries``/``corpus`` the fp32 per-row ``q_scales``/``c_scales`` are required (int8 scoring).
    """
    splits, n_q, k_pad = out.shape
    n_c, dim = corpus.shape
    config = launch_config(k_pad, dim)
    tiles_per_split = triton.cdiv(triton.cdiv(n_c, config["BLOCK_N"]), splits)
    upcast = backend == "interpret" and queries.dtype == torch.bfloat16
    precision = "ieee" if queries.dtype == torch.float32 or upcast else "tf32"
    int8 = queries.dtype == torch.int8
    if int8 and (q_scales is None or c_scales is None):
        raise ValueError("int8 scoring needs q_scales and c_scales")
    grid = (triton.cdiv(n_q, config["BLOCK_Q"]), splits)
    launcher(_similarity_topk_kernel, backend)[grid](
        queries, corpus, q_scales if int8 else queries, c_scales if int8 else corpus, out, n_q, n_c, dim,
        queries.stride(0), corpus.stride(0), out.stride(0), out.stride(1), tiles_per_split,
        PRECISION=precision, INT8=int8, UPCAST=upcast, **config)


def launch_config(k_pad: int, dim: int) -> dict[str, int]:
    """Block sizes and warps: corpus tiles at least K wide (the bitonic merge needs BLOCK_N >= K)."""
    return {"BLOCK_Q": 16 if k_pad >= 512 else 32, "BLOCK_N": max(k_pad, 64),
            "BLOCK_D": min(64, max(16, triton.next_power_of_2(dim))), "K": k_pad,
            "num_warps": 8 if k_pad >= 256 else 4}


def default_splits(n_q: int, n_c: int, k_pad: int, device: torch.device) -> int:
    """Corpus splits: enough programs to fill the GPU (≈ 4 per SM), each split at least 4 corpus tiles long."""
    n_tiles = triton.cdiv(n_c, launch_config(k_pad, 16)["BLOCK_N"])
    if device.type != "cuda":
        return min(n_tiles, 2)  # the interpreter: still exercises the cross-split merge
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    q_tiles = triton.cdiv(n_q, launch_config(k_pad, 16)["BLOCK_Q"])
    return max(1, min(triton.cdiv(4 * sms, q_tiles), n_tiles // 4 or 1))


def similarity_topk(queries: torch.Tensor, corpus: torch.Tensor, k: int, *, backend: str = "triton",
                    splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` corpus rows per query by inner product: ``(scores fp32 (q, k'), ids int64 (q, k'))``, k' = min(k, n).

    ``queries`` (q, d) and ``corpus`` (n, d) share a dtype (fp32, fp16 or bf16); rows must be contiguous in d.
    """
    _check_pair(queries, corpus)
    out, k_eff = split_key_buffer(queries.shape[0], corpus.shape[0], k, queries.device, splits)
    launch_similarity_topk(queries.contiguous(), corpus.contiguous(), out, backend)
    return merge_split_keys(out, k_eff)


def split_key_buffer(n_q: int, n_c: int, k: int, device: torch.device,
                     splits: int | None = None) -> tuple[torch.Tensor, int]:
    """The int64 ``(splits, q, K)`` buffer a split top-k kernel fills (K = next power of two ≥ k, at least 16),
    and the width ``min(k, n_c)`` that :func:`merge_split_keys` returns."""
    k_eff = min(k, n_c)
    k_pad = max(16, triton.next_power_of_2(k_eff))
    splits = splits or default_splits(n_q, n_c, k_pad, device)
    return torch.empty((splits, n_q, k_pad), dtype=torch.int64, device=device), k_eff


def check_codes(q_codes: torch.Tensor, c_codes: torch.Tensor, dtype: torch.dtype) -> None:
    """Query and corpus codes of ``dtype`` and equal width, and a corpus that is not empty."""
    if q_codes.dtype != dtype or c_codes.dtype != dtype or q_codes.shape[1] != c_codes.shape[1]:
        raise ValueError(f"expected {str(dtype).removeprefix('torch.')} codes of equal width, got {q_codes.dtype} "
                         f"{tuple(q_codes.shape)} and {c_codes.dtype} {tuple(c_codes.shape)}")
    if c_codes.shape[0] == 0:
        raise ValueError("cannot search an empty corpus")


def merge_split_keys(out: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge per-split keys ``(splits, q, K)`` into the final sorted ``(scores, ids)`` of width ``k``."""
    return reference.best_keys(out.permute(1, 0, 2).reshape(out.shape[1], -1), k)


def _check_pair(queries: torch.Tensor, corpus: torch.Tensor) -> None:
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"expected (q, d) queries and (n, d) corpus, got {tuple(queries.shape)} and "
                         f"{tuple(corpus.shape)}")
    if corpus.shape[0] == 0:
        raise ValueError("cannot search an empty corpus")
    if queries.dtype != corpus.dtype:
        raise ValueError(f"queries are {queries.dtype} but the corpus is {corpus.dtype}; cast one of them")
