"""Corpus IDF token weights in the pooling: a training-free adaptation of any mean-pooled model to a corpus.

A mean-pooled model averages its token states with equal weight, so a frequent word counts as much as the rare
domain term a query hinges on. Weighting each token by its inverse document frequency *in the job's corpus*
(the BM25 idf, ``log((N - df + 0.5) / (df + 0.5) + 1)``, clamped below at ``floor`` and raised to ``power``)
moves the sentence vector toward the words that tell passages apart. The weights are stored in
sentence-transformers' own ``WordWeights`` module, between the ``Transformer`` and the ``Pooling``: mean pooling
then divides by the sum of the weights, ``SentenceTransformer(path)`` loads the model with nothing of ours, and
the transformer's weights are untouched.

Measured with ``benchmarks/bench_token_weights.py`` (MiniLM-L6, nDCG@10, paired randomization test), power 0.5,
floor 0.5: SciFact train claims +0.0070 at 384 d (p = 0.03) and +0.0145 at 96 d (p < 0.001); Cranfield +0.0098
at 384 d (p = 0.03) and +0.0025 at 96 d (p = 0.6); power 0.25 and 1.0 gave less on both development sets. Run
once afterwards: ADI +0.025 (p = 0.14), SciFact test claims +0.0055 (p = 0.31) at 384 d. Learning the 30,522 weights by
distillation from the hybrid teacher on 1,800 inverse-cloze queries added nothing over this fixed rule (and
over-fitted within two epochs at a larger learning rate), so the rule is fixed, not learned.

Tokens that never occur in the corpus get the largest weight (df = 0), as in BM25; special tokens ([CLS],
[SEP]), present in every passage, get ``floor ** power``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


def corpus_idf(tokenizer, passages: Iterable[str], *, max_length: int, floor: float = 0.5, power: float = 0.5,
               batch_size: int = 1024) -> np.ndarray:
    """Per-token weights (vocabulary size,) from document frequencies over ``passages``, as the model tokenizes
    them (truncated at ``max_length``, special tokens included)."""
    df = np.zeros(len(tokenizer), dtype=np.int64)
    n = 0
    batch: list[str] = []

    def count(texts: list[str]) -> None:
        for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]:
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1

    for text in passages:
        batch.append(text)
        n += 1
        if len(batch) == batch_size:
            count(batch)
            batch = []
    if batch:
        count(batch)
    if n == 0:
        raise ValueError("token weights: the corpus has no passages")
    idf = np.log((n - df + 0.5) / (df + 0.5) + 1.0)
    return (np.maximum(idf, floor) ** power).astype(np.float32)


def add_word_weights(model, weights: np.ndarray) -> None:
    """Insert a ``WordWeights`` module with ``weights`` right after the model's first module (the Transformer),
    replacing one already there. ``model`` is a ``SentenceTransformer``; modules keep their order otherwise."""
    from sentence_transformers.sentence_transformer.modules import WordWeights

    tokenizer = model.tokenizer
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(weights))))
    module = WordWeights(vocab=vocab, word_weights={t: float(w) for t, w in zip(vocab, weights, strict=True)},
                         unknown_word_weight=1.0)
    names = list(model._modules)
    kept = [model._modules[k] for k in names if type(model._modules[k]).__name__ != "WordWeights"]
    for k in names:
        del model._modules[k]
    for i, m in enumerate([kept[0], module, *kept[1:]]):
        model.add_module(str(i), m)


def weight_saved_model(model_dir: Path, passages: Iterable[str], *, floor: float, power: float) -> dict:
    """Rewrite the sentence-transformers model in ``model_dir`` with corpus IDF token weights (see the module
    docstring); returns what was done, for the manifest. A model whose pooling is not a plain mean is left as it
    is (``applied: False`` with the reason)."""
    from sentence_transformers import SentenceTransformer

    from embedforge.training.model_files import save_in_place

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    pooling = next((m for m in model if type(m).__name__ == "Pooling"), None)
    if pooling is None or getattr(pooling, "pooling_mode", None) != "mean":
        return {"applied": False, "reason": "the model's pooling is not a plain mean"}
    texts = list(passages)
    weights = corpus_idf(model.tokenizer, texts, max_length=model.max_seq_length, floor=floor, power=power)
    add_word_weights(model, weights)
    save_in_place(model, model_dir)
    return {"applied": True, "kind": "idf", "power": power, "floor": floor, "passages": len(texts),
            "weight_min": round(float(weights.min()), 4), "weight_max": round(float(weights.max()), 4)}
