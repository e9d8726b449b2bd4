"""The one quantization rule: what embed stores is what the kernels and the evaluation's quantized search score."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

import embedforge.kernels as kernels
from embedforge.encoding.bulk_embed import Block, OutputOptions, embeddings_table
from embedforge.kernels import reference
from embedforge.search.quantize import QuantizedSearcher, pack_binary, quantize_int8, unpack_signs


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_int8_rounds_half_away_from_zero_with_a_max_abs_scale() -> None:
    v = np.array([[127.0, 0.5, -0.5, 2.5, -2.5, 1.49], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    codes, scales = quantize_int8(v)
    assert codes.dtype == np.int8 and scales.dtype == np.float32
    assert codes.tolist() == [[127, 1, -1, 3, -3, 1], [0] * 6]  # np.rint would give 0, -0, 2, -2
    assert scales.tolist() == [1.0, 0.0]


def test_binary_is_the_packbits_layout_and_unpacks_to_signs() -> None:
    v = np.array([[0.5, -1, 0.1, 0, 2, -3, 1, 1, -0.2]], dtype=np.float32)
    bits = pack_binary(v)
    assert bits.tolist() == [[0b10101011, 0]] and np.array_equal(bits, np.packbits(v > 0, axis=1))
    assert unpack_signs(bits, 9).tolist() == [[1, -1, 1, -1, 1, -1, 1, 1, -1]]


@pytest.mark.parametrize("backend", ["torch", "interpret"])
def test_stored_codes_equal_what_the_scorer_expects(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """embed's int8/scale/binary columns are bit-identical to the kernels' codes, and searching the stored codes
    with the kernels gives the evaluation's quantized results."""
    monkeypatch.setenv("EMBEDFORGE_KERNELS", backend)
    rng = np.random.default_rng(3)
    full = _unit(rng, 300, 96)
    full[0] = 0.0  # a row whose codes are exact halves: 1.5 → 2, 0.5 → 1 (np.rint would store 0 and -0)
    full[0, :7] = np.array([127, 15, 5, 1.5, -1.5, 0.5, -0.5], dtype=np.float32) / 128  # norm exactly 1
    queries = full[:12] + 0.1 * rng.normal(size=(12, 96)).astype(np.float32)
    block = Block("part-00000", ids=[f"d{i}" for i in range(300)], chunk_ids=[f"c{i}" for i in range(300)],
                  doc_versions=["v"] * 300, texts=["t"] * 300)
    table = embeddings_table(full, block, "m", 48, OutputOptions(dims=[48], int8=True, binary=True))
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    stored = np.array(table.column("int8").to_pylist(), dtype=np.int8)
    scales = table.column("scale").to_numpy().copy()
    bits = np.array(table.column("binary").to_pylist(), dtype=np.uint8)
    assert table.schema.field("scale").type == pa.float32()
    assert stored[0, :8].tolist() == [127, 15, 5, 2, -2, 1, -1, 0] and scales[0] == np.float32(1 / 128)

    k_codes, k_scales = kernels.quantize_int8(torch.from_numpy(vectors))  # the scorer's own quantizer
    assert np.array_equal(stored, k_codes.numpy()) and np.array_equal(scales, k_scales.numpy())
    assert np.array_equal(bits, kernels.pack_binary(torch.from_numpy(vectors)).numpy())

    q48 = queries[:, :48] / np.linalg.norm(queries[:, :48], axis=1, keepdims=True)
    q_codes, q_scales = kernels.quantize_int8(torch.from_numpy(q48))
    want_s, want_i = reference.int8_topk(q_codes, q_scales, torch.from_numpy(stored), torch.from_numpy(scales), 10)
    got_s, got_i = QuantizedSearcher(vectors, "int8").search(q48, 10)
    assert np.array_equal(got_i, want_i.numpy()) and np.array_equal(got_s, want_s.numpy())
    assert (got_i[:, 0] == np.arange(12)).mean() >= 0.9

    want_d, want_b = reference.hamming_topk(torch.from_numpy(pack_binary(q48)), torch.from_numpy(bits), 10)
    got_s, got_i = QuantizedSearcher(vectors, "binary").search(q48, 10)
    assert np.array_equal(got_i, want_b.numpy()) and np.array_equal(-got_s, want_d.numpy().astype(np.float32))


def test_binary_rescore_scores_the_float_query_against_candidate_signs() -> None:
    rng = np.random.default_rng(4)
    corpus = _unit(rng, 500, 64)
    queries = corpus[:20] + 0.05 * rng.normal(size=(20, 64)).astype(np.float32)
    scores, ids = QuantizedSearcher(corpus, "binary_rescore", rescore_multiplier=4).search(queries, 10)
    signs = unpack_signs(pack_binary(corpus), 64)
    assert np.allclose(scores, np.einsum("qd,qkd->qk", queries, signs[ids]), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    _, cand = reference.hamming_topk(torch.from_numpy(pack_binary(queries)), torch.from_numpy(pack_binary(corpus)), 40)
    assert all(set(row) <= set(c) for row, c in zip(ids.tolist(), cand.tolist(), strict=True))
    assert (ids[:, 0] == np.arange(20)).mean() >= 0.9
