"""Corpus principal-axis rotation (a ``Dense`` module after the pooling): the fit, the saved model, the fast path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedforge.encoding.encoder import Encoder
from embedforge.training.corpus_rotation import principal_axes, rotate_saved_model, sample
from embedforge.training.token_weights import weight_saved_model

CORPUS = ["Aspirin lowers the risk of colorectal cancer in the elderly.",
          "The boundary layer separates at high Mach numbers and the flow is turbulent.",
          "The cat sat on the mat and the dog slept.",
          "Statins reduce the risk of the heart attack.",
          "Heat transfer in a laminar boundary layer over a flat plate.",
          "Vitamin D supplements and bone fractures in older women.",
          "Shock waves on a swept wing at transonic speed.",
          "Dogs and cats are the most common pets."]
TEXTS = ["aspirin and colorectal cancer", "boundary layer separation at Mach 3", "the dog and the cat", "statins"]


def test_principal_axes_are_orthonormal_ordered_and_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 0.1, 3.0, 1.0, 0.5, 2.0])
    rotation, share = principal_axes(x)
    assert np.allclose(rotation @ rotation.T, np.eye(6), atol=1e-5)
    assert np.all(np.diff(share) <= 1e-12) and share.sum() == pytest.approx(1.0)
    assert np.argmax(np.abs(rotation[0])) == 0 and np.argmax(np.abs(rotation[1])) == 2  # largest variance first
    assert np.all(rotation[np.arange(6), np.abs(rotation).argmax(1)] > 0)  # sign rule
    again, _ = principal_axes(x[::-1])  # same vectors, other order: same matrix
    assert np.allclose(again, rotation, atol=1e-5)
    with pytest.raises(ValueError, match="at least two"):
        principal_axes(x[:1])


def test_sample_is_seeded_ordered_and_bounded():
    items = [f"p{i}" for i in range(100)]
    assert sample(items, 1000) == items
    picked = sample(items, 10)
    assert len(picked) == 10 and picked == sorted(picked, key=lambda s: int(s[1:]))
    assert sample(iter(items), 10) == picked


def test_saved_model_keeps_full_dimension_cosines_and_front_loads_variance(st_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    st_model.save(str(tmp_path / "m"))
    weight_saved_model(tmp_path / "m", CORPUS, floor=0.5, power=0.5)
    before = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    b_texts, b_corpus = before.encode(TEXTS), before.encode(CORPUS)
    info = rotate_saved_model(tmp_path / "m", CORPUS, dims=[384, 4, 2])
    assert info["applied"] and info["passages"] == len(CORPUS) and info["variance_share"]["384"] == pytest.approx(1.0)
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if p.is_dir()) == \
        ["1_WordWeights", "2_Pooling", "3_Dense", "4_Normalize"]
    dense = json.loads((tmp_path / "m" / "3_Dense" / "config.json").read_text())
    assert dense["bias"] is False and dense["activation_function"].endswith("Identity")
    after = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    a_texts, a_corpus = after.encode(TEXTS), after.encode(CORPUS)
    assert np.abs(a_texts @ a_corpus.T - b_texts @ b_corpus.T).max() < 1e-5  # full-dim scores unchanged
    assert np.abs(a_texts - b_texts).max() > 0.01  # ... but the coordinates are not
    # the corpus's energy sits in the first coordinates now
    assert (a_corpus[:, :2] ** 2).sum() > 2 * (b_corpus[:, :2] ** 2).sum()
    # fitting again replaces the rotation (fitted on the unrotated space): same matrix, one Dense module
    rotate_saved_model(tmp_path / "m", CORPUS, dims=[384])
    again = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    assert [type(m).__name__ for m in again] == ["Transformer", "WordWeights", "Pooling", "Dense", "Normalize"]
    assert np.abs(again.encode(TEXTS) - a_texts).max() < 1e-5


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_encoder_fast_path_matches_sentence_transformers_on_a_rotated_model(st_model, tmp_path, backend):
    from sentence_transformers import SentenceTransformer

    st_model.save(str(tmp_path / "m"))
    rotate_saved_model(tmp_path / "m", CORPUS)
    reference = SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(TEXTS)
    enc = Encoder(tmp_path / "m", backend=backend)
    assert enc.backend == backend and enc.projection is not None
    assert (enc.encode(TEXTS) * reference).sum(1).min() > 0.9999
    truncated = enc.encode(TEXTS, dim=2)
    assert truncated.shape == (len(TEXTS), 2)


def test_a_dense_layer_that_is_not_a_rotation_uses_the_sentence_transformers_path(st_model, tmp_path):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    model = SentenceTransformer(modules=[st_model[0], st_model[1], Dense(384, 64, activation_function=torch.nn.Tanh())],
                                device="cpu")
    model.save(str(tmp_path / "m"))
    enc = Encoder(tmp_path / "m")
    assert enc.backend == "st"
    assert enc.encode(TEXTS).shape == (len(TEXTS), 64)
