"""Corpus IDF token weights (``WordWeights``): the rule, the saved model, and the encoder's fast path on it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from embedforge.encoding.encoder import Encoder
from embedforge.training.token_weights import add_word_weights, corpus_idf, weight_saved_model

CORPUS = ["Aspirin lowers the risk of colorectal cancer in the elderly.",
          "The boundary layer separates at high Mach numbers and the flow is turbulent.",
          "The cat sat on the mat and the dog slept.",
          "Statins reduce the risk of the heart attack."]
TEXTS = ["aspirin and colorectal cancer", "boundary layer separation at Mach 3", "the dog and the cat", "statins"]


def test_idf_rule_weights_rare_tokens_up_and_special_tokens_to_the_floor(st_model):
    tok = st_model.tokenizer
    w = corpus_idf(tok, CORPUS, max_length=256, floor=0.5, power=0.5)
    assert w.shape == (len(tok),)
    the, cancer = tok.convert_tokens_to_ids(["the", "cancer"])
    n = len(CORPUS)
    assert w[cancer] == pytest.approx(np.log((n - 1 + 0.5) / 1.5 + 1) ** 0.5, rel=1e-6)
    assert w[cancer] > w[the]
    assert w[tok.cls_token_id] == pytest.approx(0.5 ** 0.5) == w[tok.sep_token_id]  # in every passage: the floor
    unseen = tok.convert_tokens_to_ids("volcano")
    assert w[unseen] == w.max()  # df = 0, as in BM25
    with pytest.raises(ValueError, match="no passages"):
        corpus_idf(tok, [], max_length=256)


def test_saved_model_loads_in_sentence_transformers_and_pools_by_weight(st_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    base = st_model.encode(TEXTS)
    st_model.save(str(tmp_path / "copy"))
    model = SentenceTransformer(str(tmp_path / "copy"), device="cpu")
    w = corpus_idf(model.tokenizer, CORPUS, max_length=256)
    add_word_weights(model, w)
    assert [type(m).__name__ for m in model] == ["Transformer", "WordWeights", "Pooling", "Normalize"]
    model.save(str(tmp_path / "weighted"))
    loaded = SentenceTransformer(str(tmp_path / "weighted"), device="cpu")
    vectors = loaded.encode(TEXTS)
    # the same as weighting the token states by hand
    feats = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = loaded[0].auto_model(**feats).last_hidden_state
    weights = feats["attention_mask"] * torch.from_numpy(w)[feats["input_ids"]]
    manual = torch.nn.functional.normalize((hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True),
                                           dim=-1).numpy()
    assert np.abs(manual - vectors).max() < 1e-5
    assert (vectors * base).sum(1).min() < 0.9995  # the weights change the vectors


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_encoder_fast_path_matches_sentence_transformers_on_a_weighted_model(st_model, tmp_path, backend):
    from sentence_transformers import SentenceTransformer

    st_model.save(str(tmp_path / "m"))
    info = weight_saved_model(tmp_path / "m", CORPUS, floor=0.5, power=0.5)
    assert info["applied"] and info["passages"] == len(CORPUS)
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if p.is_dir()) == \
        ["1_WordWeights", "2_Pooling", "3_Normalize"]  # a fresh save: no stale module folders
    reference = SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(TEXTS)
    enc = Encoder(tmp_path / "m", backend=backend)
    assert enc.backend == backend and enc.token_weights is not None
    assert (enc.encode(TEXTS) * reference).sum(1).min() > 0.9999


def test_models_saved_by_sentence_transformers_6_use_the_fast_path(st_model, tmp_path):
    st_model.save(str(tmp_path / "m"))
    assert "pooling_mode" in json.loads((tmp_path / "m" / "1_Pooling" / "config.json").read_text())
    assert Encoder(tmp_path / "m", backend="torch").backend == "torch"


def test_a_model_without_mean_pooling_is_left_alone(st_model, tmp_path):
    st_model.save(str(tmp_path / "m"))
    cfg_file = tmp_path / "m" / "1_Pooling" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["pooling_mode"] = "cls"
    cfg_file.write_text(json.dumps(cfg))
    before = sorted(p.name for p in (tmp_path / "m").rglob("*"))
    info = weight_saved_model(tmp_path / "m", CORPUS, floor=0.5, power=0.5)
    assert info == {"applied": False, "reason": "the model's pooling is not a plain mean"}
    assert sorted(p.name for p in (tmp_path / "m").rglob("*")) == before
    shutil.rmtree(tmp_path / "m")
