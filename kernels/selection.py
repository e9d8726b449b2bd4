"""Device functions shared by the top-k kernels: order-preserving keys and the running top-k merge.

A candidate is one uint64 key: the fp32 score mapped to an order-preserving uint32 in the high word, and
``2**32 - 1 - id`` in the low word, so a larger key means a higher score and, on equal scores, a lower corpus
id (FAISS's order). Keys are unique, so every sort/merge below is deterministic. Each program keeps a running
top-``K`` per query sorted in descending key order; a new tile is merged with the bitonic top-k trick:
``max(running, flip(topk(tile)))`` holds the ``K`` best of both and is bitonic, so one bitonic merge sorts it.
Kernels write keys as int64 (sign bit flipped) that ``embedforge.kernels.reference.decode_keys`` turns back into
``(score, id)``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def split_tiles(split, tiles_per_split, n_cols, BLOCK_N: tl.constexpr):
    """``(first, last)`` corpus tiles of ``split`` (tiles of ``BLOCK_N`` rows, ``tiles_per_split`` per split)."""
    first = split * tiles_per_split
    return first, tl.minimum(first + tiles_per_split, tl.cdiv(n_cols, BLOCK_N))


@triton.jit
def load_tile(ptr, rows, rows_ok, offs, offs_ok, stride):
    """``rows × offs`` of a row-major matrix with ``stride`` elements a row; 0 where a mask is off."""
    return tl.load(ptr + rows[:, None].to(tl.int64) * stride + offs[None, :], mask=rows_ok[:, None] & offs_ok[None, :],
                   other=0)


@triton.jit
def score_keys(scores, cols, valid):
    """fp32 ``scores`` and int ``cols`` (global corpus ids) → uint64 keys; ``valid == False`` → key 0 (never wins)."""
    bits = (scores.to(tl.float32) + 0.0).to(tl.uint32, bitcast=True)
    ordered = tl.where((bits >> 31) != 0, ~bits, bits | 0x80000000)
    low = (4294967295 - cols.to(tl.int64)).to(tl.uint64)
    keys = (ordered.to(tl.uint64) << 32) | low
    return tl.where(valid, keys, tl.zeros_like(keys))


@triton.constexpr_function
def log2_exact(n):
    """log2 of a power of two, at compile time."""
    assert n > 0 and n & (n - 1) == 0, f"{n} is not a power of two"
    return n.bit_length() - 1


@triton.jit
def _bit_indicator(n_bits: tl.constexpr, j: tl.constexpr):
    """0/1 along bit ``j`` of a ``[rows, 2, ..., 2]`` hypercube with ``n_bits`` bit axes (bit 0 innermost)."""
    return tl.reshape(tl.arange(0, 2), [1] + [1] * (n_bits - j - 1) + [2] + [1] * j)


@triton.jit
def _compare_exchange(h, flip, n_bits: tl.constexpr, j: tl.constexpr):
    """Sort each pair along bit ``j``: ascending where ``flip`` is 0, descending where it is 1."""
    lo = tl.min(h, axis=n_bits - j, keep_dims=True)
    hi = tl.max(h, axis=n_bits - j, keep_dims=True)
    return tl.where((flip ^ _bit_indicator(n_bits, j)) != 0, hi, lo)


@triton.jit
def _bitonic_stage(h, stage: tl.constexpr, order: tl.constexpr, n_bits: tl.constexpr):
    """Merge bitonic runs of length ``2**stage``; order 0 ascending, 1 descending, 2 alternating by run."""
    if order == 2:
        flip = _bit_indicator(n_bits, stage)
    else:
        flip = order
    for i in tl.static_range(stage):
        h = _compare_exchange(h, flip, n_bits, stage - 1 - i)
    return h


@triton.jit
def bitonic_topk(x, K: tl.constexpr, DESCENDING: tl.constexpr):
    """The ``K`` largest of each row of ``x`` [rows, N] (powers of two, K <= N), sorted.

    The bitonic top-k of ``tl.topk`` (sort runs of K, keep the max of run pairs, re-merge), written with
    min/max reductions over the size-2 axes instead of XOR shuffles, so Triton's interpreter runs it fast too.
    """
    ROWS: tl.constexpr = x.shape[0]
    LOG_N: tl.constexpr = log2_exact(x.shape[1])
    LOG_K: tl.constexpr = log2_exact(K)
    h = tl.reshape(x, [ROWS] + [2] * LOG_N)
    for i in tl.static_range(1, LOG_K + 1):
        h = _bitonic_stage(h, i, 2 if i < LOG_N else DESCENDING, LOG_N)
    for i in tl.static_range(LOG_K + 1, LOG_N + 1):
        h = tl.max(h, axis=LOG_N - (i - LOG_K - 1) - LOG_K)
        h = _bitonic_stage(h, LOG_K, 2 if i < LOG_N else DESCENDING, LOG_N - (i - LOG_K))
    return tl.reshape(h, [ROWS, K])


@triton.jit
def merge_running_topk(running, tile_keys, K: tl.constexpr):
    """Merge ``tile_keys`` [BQ, BN >= K] into ``running`` [BQ, K] (sorted descending); skip tiles that cannot win."""
    tile_best = tl.max(tile_keys, axis=1)
    running_worst = tl.min(running, axis=1)
    if tl.max((tile_best > running_worst).to(tl.int32), axis=0) > 0:
        best = bitonic_topk(tile_keys, K, 0)  # ascending, so max(descending, ascending) is bitonic
        merged = tl.reshape(tl.maximum(running, best), [running.shape[0]] + [2] * log2_exact(K))
        running = tl.reshape(_bitonic_stage(merged, log2_exact(K), 1, log2_exact(K)), [running.shape[0], K])
    return running


@triton.jit
def store_keys(out_ptr, running, rows, n_rows, stride_row, K: tl.constexpr):
    """Write ``running`` [BQ, K] keys as int64 (sign bit flipped, so signed order = key order) for valid rows."""
    signed = (running ^ 0x8000000000000000).to(tl.int64, bitcast=True)
    offs = rows[:, None].to(tl.int64) * stride_row + tl.arange(0, K)[None, :]
    tl.store(out_ptr + offs, signed, mask=(rows < n_rows)[:, None])
