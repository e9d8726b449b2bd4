"""Hamming-distance top-k over packed binary codes, streaming like ``embedforge.kernels.topk``.

Codes (uint8 ``(n, bytes)`` from ``embedforge.kernels.binary``) are read as 32-bit words; each program XORs a tile of
query words against a tile of corpus words, counts bits with a SWAR popcount, and merges the tile into a
running top-``K`` (smallest distance first, ties to the lower corpus id) in registers. A 384-d corpus is 48
bytes a row — 32× less than fp32 — so this is the cheap first stage before ``embedforge.kernels.rescore``. Semantics:
``embedforge.kernels.reference.hamming_topk``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from embedforge.kernels.launch import launcher
from embedforge.kernels.selection import load_tile, merge_running_topk, score_keys, split_tiles, store_keys
from embedforge.kernels.topk import check_codes, merge_split_keys, split_key_buffer


@triton.jit
def _hamming_topk_kernel(q_ptr, c_ptr, out_ptr, n_q, n_c, n_words, stride_q, stride_c, stride_split, stride_out_q,
                         tiles_per_split, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
                         K: tl.constexpr):
    pid_q = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    row_ok = rows < n_q
    running = tl.zeros([BLOCK_Q, K], dtype=tl.uint64)
    first, last = split_tiles(split, tiles_per_split, n_c, BLOCK_N)
    for tile in range(first, last):
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < n_c
        dist = tl.zeros([BLOCK_Q, BLOCK_N], dtype=tl.int32)
        for w0 in range(0, n_words, BLOCK_W):
            offs_w = w0 + tl.arange(0, BLOCK_W)
            w_ok = offs_w < n_words
            q = load_tile(q_ptr, rows, row_ok, offs_w, w_ok, stride_q)
            c = load_tile(c_ptr, cols, col_ok, offs_w, w_ok, stride_c)
            x = (q[:, None, :] ^ c[None, :, :]).to(tl.uint32, bitcast=True)
            x = x - ((x >> 1) & 0x55555555)  # SWAR popcount of each 32-bit word
            x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
            x = (x + (x >> 4)) & 0x0F0F0F0F
            x = x + (x >> 8)
            x = (x + (x >> 16)) & 0x3F
            dist += tl.sum(x.to(tl.int32), axis=2)
        keys = score_keys(-dist.to(tl.float32), cols[None, :], row_ok[:, None] & col_ok[None, :])
        running = merge_running_topk(running, keys, K)
    store_keys(out_ptr + split * stride_split, running, rows, n_q, stride_out_q, K)


def launch_hamming_topk(q_words: torch.Tensor, c_words: torch.Tensor, out: torch.Tensor, backend: str) -> None:
    """Fill ``out`` (int64 ``(splits, q, K)``) with each split's best keys over int32 code words."""
    splits, n_q, k_pad = out.shape
    n_c, n_words = c_words.shape
    config = launch_config(k_pad, n_words)
    tiles_per_split = triton.cdiv(triton.cdiv(n_c, config["BLOCK_N"]), splits)
    launcher(_hamming_topk_kernel, backend)[(triton.cdiv(n_q, config["BLOCK_Q"]), splits)](
        q_words, c_words, out, n_q, n_c, n_words, q_words.stride(0), c_words.stride(0), out.stride(0),
        out.stride(1), tiles_per_split, **config)


def launch_config(k_pad: int, n_words: int) -> dict[str, int]:
    """Block sizes and warps: as ``embedforge.kernels.topk``, with ≈ 8k word XORs per step of the 3-d tile."""
    block_q, block_n = (16 if k_pad >= 512 else 32), max(k_pad, 64)
    block_w = max(1, min(triton.next_power_of_2(n_words), 8192 // (block_q * block_n)))
    return {"BLOCK_Q": block_q, "BLOCK_N": block_n, "BLOCK_W": block_w, "K": k_pad,
            "num_warps": 8 if k_pad >= 256 else 4}


def code_words(bits: torch.Tensor) -> torch.Tensor:
    """uint8 codes ``(n, bytes)`` → int32 words ``(n, ceil(bytes / 4))`` (zero bytes appended when needed)."""
    pad = -bits.shape[1] % 4
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    return bits.contiguous().view(torch.int32)


def hamming_topk(q_bits: torch.Tensor, c_bits: torch.Tensor, k: int, *, backend: str = "triton",
                 splits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest corpus codes by Hamming distance: ``(distances int32 ascending (q, k'), ids int64)``."""
    check_codes(q_bits, c_bits, torch.uint8)
    out, k_eff = split_key_buffer(q_bits.shape[0], c_bits.shape[0], k, q_bits.device, splits)
    launch_hamming_topk(code_words(q_bits), code_words(c_bits), out, backend)
    scores, ids = merge_split_keys(out, k_eff)
    return (-scores).to(torch.int32), ids
