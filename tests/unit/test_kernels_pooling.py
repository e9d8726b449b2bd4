"""Fused pooling kernel vs its torch reference, run by Triton's interpreter on CPU (and compiled on CUDA).

Tolerance: both sides load the same fp32/fp16/bf16 values, upcast them exactly and accumulate in fp32, so
they differ only by summation order — atol 2e-6 on unit-norm outputs for every input dtype (1e-5 for
fp16/bf16 on GPU, where reduction trees differ more).
"""

from __future__ import annotations

import pytest
import torch

import embedforge.kernels as kernels
from embedforge.kernels import reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ATOL = {torch.float32: 2e-6, torch.float16: 2e-6, torch.bfloat16: 2e-6}


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDFORGE_KERNELS", "interpret")


def _batch(b: int, t: int, h: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=gen).to(dtype)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(torch.int64)
    return hidden, mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("b", "t", "h", "dim"), [(1, 1, 1, None), (7, 385, 33, 20), (2, 33, 385, 385)])
def test_pooling_matches_reference(interpret: None, b: int, t: int, h: int, dim: int | None,
                                   dtype: torch.dtype) -> None:
    hidden, mask = _batch(b, t, h, dtype)
    got = kernels.pool_normalize(hidden, mask, dim)
    want = reference.pool_normalize(hidden, mask, dim)
    assert got.shape == (b, dim or h) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=ATOL[dtype], rtol=0)
    if (dim or h) > 1:  # unit rows (a 1-d vector normalizes to ±1 trivially)
        torch.testing.assert_close(got.norm(dim=1), torch.ones(b), atol=1e-5, rtol=0)


def test_pooling_long_sequence_matryoshka_bf16(interpret: None) -> None:
    """The 1023 × 384 case: long sequences, Matryoshka truncation to 256, bf16 states."""
    hidden, mask = _batch(3, 1023, 384, torch.bfloat16, seed=1)
    got = kernels.pool_normalize(hidden, mask, 256)
    torch.testing.assert_close(got, reference.pool_normalize(hidden, mask, 256), atol=2e-6, rtol=0)
    # Matryoshka: truncating then normalizing differs from normalizing the full vector then truncating
    full = reference.pool_normalize(hidden, mask)[:, :256]
    assert (got - full).abs().max() > 1e-3


def test_padding_only_rows_come_out_as_zeros(interpret: None) -> None:
    hidden, mask = _batch(4, 9, 40, torch.float32)
    mask[1] = 0
    mask[3] = 0
    got = kernels.pool_normalize(hidden, mask)
    assert torch.equal(got[1], torch.zeros(40)) and torch.equal(got[3], torch.zeros(40))
    torch.testing.assert_close(got, reference.pool_normalize(hidden, mask), atol=2e-6, rtol=0)


def test_bool_mask_unnormalized_and_strided_input(interpret: None) -> None:
    hidden, mask = _batch(5, 17, 64, torch.float32, seed=3)
    strided = hidden[:, ::2, :]  # non-contiguous token axis
    bool_mask = mask[:, ::2].bool()
    got = kernels.pool_normalize(strided, bool_mask, 48, normalize=False)
    want = reference.pool_normalize(strided, bool_mask, 48, normalize=False)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-6)
    # un-normalized output is the plain masked mean
    first = strided[0, bool_mask[0]][:, :48].mean(0)
    torch.testing.assert_close(got[0], first, atol=2e-6, rtol=1e-6)


def test_every_output_element_is_written(interpret: None) -> None:
    from embedforge.kernels.pooling import launch_pool_normalize

    hidden, mask = _batch(6, 11, 70, torch.float16)
    mask[2] = 0
    out = torch.full((6, 50), float("nan"))
    launch_pool_normalize(hidden, mask, out, True, "interpret")
    assert not out.isnan().any()
    torch.testing.assert_close(out, reference.pool_normalize(hidden, mask, 50), atol=2e-6, rtol=0)


def test_pooling_minilm_token_states_matches_sentence_transformers(interpret: None, st_model) -> None:
    """Parity with the reference library on a real model: MiniLM's token states through the fused kernel equal
    ``SentenceTransformer.encode`` (mean pooling + Normalize), and Matryoshka truncation equals the encoder's."""
    from embedforge.encoding.encoder import truncate_normalize

    texts = ["a short query", "a longer passage about exact vector search, padding and pooling", "x"]
    with torch.inference_mode():
        states = st_model[0](st_model.preprocess(texts))
    assert states["attention_mask"].eq(0).any()  # the batch really has padding
    got = kernels.pool_normalize(states["token_embeddings"], states["attention_mask"])
    want = torch.from_numpy(st_model.encode(texts, convert_to_numpy=True))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    got128 = kernels.pool_normalize(states["token_embeddings"], states["attention_mask"], 128)
    torch.testing.assert_close(got128, torch.from_numpy(truncate_normalize(want.numpy(), 128)), atol=1e-5, rtol=0)


def test_bad_shapes_are_refused(interpret: None) -> None:
    hidden, mask = _batch(2, 5, 8, torch.float32)
    with pytest.raises(ValueError, match="dim=9"):
        kernels.pool_normalize(hidden, mask, 9)
    with pytest.raises(ValueError, match="mask"):
        kernels.pool_normalize(hidden, mask[:, :3])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_compiled_on_cuda(dtype: torch.dtype) -> None:
    hidden, mask = _batch(64, 300, 384, dtype)
    hidden, mask = hidden.cuda(), mask.cuda()
    got = kernels.pool_normalize(hidden, mask, 256, backend="triton")
    torch.testing.assert_close(got, reference.pool_normalize(hidden, mask, 256), atol=1e-5, rtol=0)
