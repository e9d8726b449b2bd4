"""The encoder's fast paths agree with sentence-transformers; batching and the cache do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge.encoding.cache import EmbeddingCache
from embedforge.encoding.encoder import Encoder, token_budget_batches, truncate_normalize

TEXTS = ["Vitamin D deficiency is linked to bone loss.", "  leading and trailing spaces  ", "x",
         "A much longer passage about aerodynamic heating of blunt bodies at hypersonic speeds, " * 6,
         "ÜNICODE and MiXeD case text", "Short query?"]


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(1).min())


def test_default_encoder_matches_sentence_transformers(encoder, st_model) -> None:
    ours = encoder.encode(TEXTS)
    ref = st_model.encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert _min_cos(ours, ref) >= 0.9999


@pytest.mark.parametrize("backend", ["torch", "st"])
def test_other_exact_backends_match(backend: str, minilm_path, st_model) -> None:
    enc = Encoder(minilm_path, device="cpu", backend=backend)
    assert enc.backend == backend
    assert _min_cos(enc.encode(TEXTS), st_model.encode(TEXTS, normalize_embeddings=True)) >= 0.9999


def test_matryoshka_truncation_renormalizes(encoder) -> None:
    full = encoder.encode(TEXTS, normalize=False)
    small = encoder.encode(TEXTS, dim=64)
    assert small.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(small, truncate_normalize(full, 64), atol=1e-6)
    with pytest.raises(ValueError, match="larger"):
        encoder.encode(TEXTS, dim=1000)


def test_token_budget_batches_respect_budget_and_cover_all() -> None:
    lengths = [5, 300, 17, 17, 120, 1, 64, 256, 9, 33]
    batches = token_budget_batches(lengths, max_tokens=512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 512 or len(b) == 1
    assert len(batches[-1]) > len(batches[0])  # short texts go in bigger batches


def test_order_is_preserved_with_windows(minilm_path, encoder) -> None:
    small_windows = Encoder(minilm_path, device="cpu", backend=encoder.backend, window=2, max_batch_tokens=64)
    np.testing.assert_allclose(small_windows.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5)


def test_cache_hits_skip_the_model(encoder, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    texts = [f"cached passage number {i}" for i in range(7)] + ["cached passage number 0"]  # one repeat
    before = encoder.stats["texts_encoded"]
    first = encoder.encode(texts, cache=cache)
    assert encoder.stats["texts_encoded"] - before == 7  # the repeated text ran once
    hits = encoder.stats["cache_hits"]
    second = encoder.encode(texts, cache=cache, dim=128)
    assert encoder.stats["texts_encoded"] - before == 7  # the model did not run again
    assert encoder.stats["cache_hits"] - hits == len(texts)
    np.testing.assert_allclose(second, truncate_normalize(first, 128), atol=1e-6)
    mixed = encoder.encode(["a new text", texts[3]], cache=cache)
    assert encoder.stats["texts_encoded"] - before == 8
    np.testing.assert_allclose(mixed[1], first[3], atol=1e-6)
    assert cache.count(f"{encoder.model_id}-{encoder.variant}", encoder.dim) == 8


def test_cache_keys_separate_variants(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put("m-a", 4, ["t"], np.ones((1, 4), np.float32))
    vectors, found = cache.get("m-b", 4, ["t", "u"])
    assert not found.any() and not vectors.any()
    vectors, found = cache.get("m-a", 4, ["u", "t"])
    assert found.tolist() == [False, True] and vectors[1].tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError):
        cache.put("m-a", 4, ["t", "v"], np.ones((1, 4), np.float32))


def test_auto_backend_choice_is_shared_by_every_process_on_the_machine(minilm_path, tmp_path, monkeypatch) -> None:
    """``auto`` measures ONNX vs torch once per model and CPU and keeps the winner on disk: a resumed run or another
    worker encodes with the same backend (bit-identical vectors), whatever the load when it starts."""
    import json

    from embedforge import device as dev
    from embedforge.encoding import encoder as enc

    monkeypatch.setenv("EMBEDFORGE_CACHE", str(tmp_path))
    monkeypatch.delenv("EMBEDFORGE_ENCODER_BACKEND", raising=False)
    monkeypatch.setattr(enc, "_FASTER", {})
    first = Encoder(minilm_path, device="cpu")
    saved = json.loads((tmp_path / "encoder_backend.json").read_text())
    key = f"{first.model_id}|{dev.cpu_model()}"
    assert saved[key]["backend"] == first.backend
    # another process (empty memory) reads the recorded choice instead of measuring again
    other = "torch" if first.backend == "onnx" else "onnx"
    saved[key]["backend"] = other
    (tmp_path / "encoder_backend.json").write_text(json.dumps(saved))
    monkeypatch.setattr(enc, "_FASTER", {})
    assert Encoder(minilm_path, device="cpu").backend == other
