"""Quantized scoring kernels vs their torch references (Triton interpreter on CPU; compiled on CUDA).

Tolerances: int8 codes, scales, binary codes, Hamming distances and int8 top-k are bit-exact on every input
dtype (integer arithmetic; the scale and code divisions are IEEE-rounded on both sides). Rescoring is fp32
dot products in another summation order: atol 1e-5 on unit vectors.
"""

from __future__ import annotations

import pytest
import torch

import embedforge.kernels as kernels
from embedforge.kernels import reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 1), (7, 385), (1023, 384)]


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDFORGE_KERNELS", "interpret")


def _vectors(n: int, d: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_quantize_and_pack_match_reference(interpret: None, n: int, d: int, dtype: torch.dtype) -> None:
    x = _vectors(n, d, dtype)
    if n > 1:
        x[1] = 0.0  # an all-zero (padding) row: scale 0, zero codes, zero bits
    codes, scales = kernels.quantize_int8(x)
    want_codes, want_scales = reference.quantize_int8(x)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    assert torch.equal(codes, want_codes) and torch.equal(scales, want_scales)
    assert codes.abs().max() <= 127
    bits = kernels.pack_binary(x)
    assert bits.shape == (n, (d + 7) // 8) and bits.dtype == torch.uint8
    assert torch.equal(bits, reference.pack_binary(x))


def test_quantization_round_trips_and_matches_numpy_packbits(interpret: None) -> None:
    import numpy as np

    x = _vectors(50, 97, seed=1)
    codes, scales = kernels.quantize_int8(x)
    err = (codes.float() * scales[:, None] - x).abs()
    assert (err <= scales[:, None] / 2 + 1e-7).all()  # within half a quantization step
    assert (codes.abs().amax(dim=1) == 127).all()  # the largest |x| of each row maps to ±127
    assert np.array_equal(kernels.pack_binary(x).numpy(), np.packbits(x.numpy() > 0, axis=1))


@pytest.mark.parametrize(("n_q", "n_c", "d", "k"), [(1, 1, 1, 1), (7, 385, 385, 10), (33, 1023, 384, 100),
                                                   (4, 30, 64, 100)])
def test_int8_and_hamming_topk_match_reference(interpret: None, n_q: int, n_c: int, d: int, k: int) -> None:
    queries, corpus = _vectors(n_q, d, seed=2), _vectors(n_c, d, seed=3)
    q_codes, q_scales = reference.quantize_int8(queries)
    c_codes, c_scales = reference.quantize_int8(corpus)
    scores, ids = kernels.int8_topk(q_codes, q_scales, c_codes, c_scales, k)
    want_s, want_i = reference.int8_topk(q_codes, q_scales, c_codes, c_scales, k)
    assert scores.shape == (n_q, min(k, n_c))
    assert torch.equal(ids, want_i) and torch.equal(scores, want_s)
    q_bits, c_bits = reference.pack_binary(queries), reference.pack_binary(corpus)
    dist, ids = kernels.hamming_topk(q_bits, c_bits, k)
    want_d, want_i = reference.hamming_topk(q_bits, c_bits, k)
    assert dist.dtype == torch.int32 and dist.shape == (n_q, min(k, n_c))
    assert torch.equal(dist, want_d) and torch.equal(ids, want_i)


def test_hamming_distances_are_true_bit_counts(interpret: None) -> None:
    """Independent of the reference: distances from numpy's unpacked bits, ties to the lower id."""
    import numpy as np

    corpus = _vectors(200, 70, seed=4)
    corpus[100:] = corpus[:100]  # duplicates: every distance ties with a later copy
    queries = _vectors(6, 70, seed=5)
    dist, ids = kernels.hamming_topk(kernels.pack_binary(queries), kernels.pack_binary(corpus), 20)
    q_bits, c_bits = queries.numpy() > 0, corpus.numpy() > 0
    full = (q_bits[:, None, :] != c_bits[None, :, :]).sum(-1)
    order = np.argsort(full, axis=1, kind="stable")[:, :20]
    assert np.array_equal(ids.numpy(), order)
    assert np.array_equal(dist.numpy(), np.take_along_axis(full, order, axis=1))
    assert (ids < 100).all() or (dist[:, :-1] == dist[:, 1:]).any()


def test_rescore_matches_reference_with_missing_candidates(interpret: None) -> None:
    queries, corpus = _vectors(37, 385, seed=6), _vectors(500, 385, seed=7)
    gen = torch.Generator().manual_seed(8)
    candidates = torch.stack([torch.randperm(500, generator=gen)[:45] for _ in range(37)])
    candidates[3, 10:] = -1  # fewer candidates than k
    candidates[5] = -1  # none at all
    scores, ids = kernels.rescore(queries, corpus, candidates, 20)
    want_s, want_i = reference.rescore(queries, corpus, candidates, 20)
    assert torch.equal(ids, want_i)
    torch.testing.assert_close(scores, want_s, atol=1e-5, rtol=0)
    assert (ids[3, 10:] == -1).all() and torch.isneginf(scores[3, 10:]).all() and (ids[5] == -1).all()
    true = (queries @ corpus.T).gather(1, ids[:3])
    torch.testing.assert_close(scores[:3], true, atol=1e-5, rtol=0)


def test_int8_then_rescore_recovers_exact_top10(interpret: None) -> None:
    """The quantized pipeline is useful: int8 top-40 then fp32 rescoring finds the exact top-10."""
    queries, corpus = _vectors(20, 128, seed=9), _vectors(600, 128, seed=10)
    _, cand = kernels.int8_topk(*kernels.quantize_int8(queries), *kernels.quantize_int8(corpus), 40)
    _, ids = kernels.rescore(queries, corpus, cand, 10)
    _, exact = reference.similarity_topk(queries, corpus, 10)
    recall = sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), exact.tolist(), strict=True)) / exact.numel()
    assert recall >= 0.98


def test_every_output_element_is_written(interpret: None) -> None:
    from embedforge.kernels.binary import launch_pack_binary
    from embedforge.kernels.hamming import code_words, launch_hamming_topk
    from embedforge.kernels.quant import launch_quantize_int8
    from embedforge.kernels.rescoring import launch_rescore

    x = _vectors(45, 100, torch.float16, seed=11)
    codes, scales = torch.full((45, 100), -128, dtype=torch.int8), torch.full((45,), float("nan"))
    launch_quantize_int8(x, codes, scales, "interpret")
    assert not (codes == -128).any() and not scales.isnan().any()
    for poison in (0x00, 0xFF):  # every value is a legal byte: two poisons, both must be overwritten
        bits = torch.full((45, 13), poison, dtype=torch.uint8)
        launch_pack_binary(x, bits, "interpret")
        assert torch.equal(bits, reference.pack_binary(x))
    out = torch.full((2, 45, 16), 0x5EED, dtype=torch.int64)
    launch_hamming_topk(code_words(bits[:7]), code_words(bits), out, "interpret")
    assert not (out[:, :7] == 0x5EED).any()
    scores = torch.full((45, 9), float("nan"))
    candidates = torch.randint(-1, 45, (45, 9), generator=torch.Generator().manual_seed(12))
    launch_rescore(x.float(), x.float(), candidates, scores, "interpret")
    assert not scores.isnan().any()


def test_bad_inputs_are_refused(interpret: None) -> None:
    x = _vectors(4, 16)
    with pytest.raises(ValueError, match="outside the corpus"):
        kernels.rescore(x, x, torch.tensor([[0, 4]] * 4), 1)
    with pytest.raises(ValueError, match="int8 codes"):
        kernels.int8_topk(x, torch.ones(4), x, torch.ones(4), 2)
    with pytest.raises(ValueError, match="uint8 codes"):
        kernels.hamming_topk(x, x, 2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantized_kernels_compiled_on_cuda(dtype: torch.dtype) -> None:
    queries, corpus = _vectors(500, 384, dtype, 0).cuda(), _vectors(20000, 384, dtype, 1).cuda()
    q_codes, q_scales = kernels.quantize_int8(queries, backend="triton")
    c_codes, c_scales = kernels.quantize_int8(corpus, backend="triton")
    want = reference.quantize_int8(corpus)
    assert torch.equal(c_codes, want[0]) and torch.equal(c_scales, want[1])
    s, i = kernels.int8_topk(q_codes, q_scales, c_codes, c_scales, 100, backend="triton")
    ws, wi = reference.int8_topk(q_codes, q_scales, c_codes, c_scales, 100)
    assert torch.equal(i, wi) and torch.equal(s, ws)
    q_bits, c_bits = kernels.pack_binary(queries, backend="triton"), kernels.pack_binary(corpus, backend="triton")
    assert torch.equal(c_bits, reference.pack_binary(corpus))
    d, i = kernels.hamming_topk(q_bits, c_bits, 100, backend="triton")
    wd, wi = reference.hamming_topk(q_bits, c_bits, 100)
    assert torch.equal(d, wd) and torch.equal(i, wi)
    s, i = kernels.rescore(queries.float(), corpus.float(), wi, 10, backend="triton")
    ws, wi = reference.rescore(queries.float(), corpus.float(), wi, 10)
    torch.testing.assert_close(s, ws, atol=1e-5, rtol=0)
