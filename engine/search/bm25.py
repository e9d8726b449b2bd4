"""BM25 (bm25s): lexical retrieval with the same ``(scores, ids)`` shape as :func:`index.search`.

Lucene's BM25 variant (k1 0.9, b 0.4: Pyserini's BEIR setting), lower-cased word tokens of one or more
characters, English stopwords removed, and words reduced to their Snowball stem (PyStemmer, ``stemmer``;
``None`` keeps the words as they are). Without stemming this reproduces the reference figures in the datasets
README (SciFact nDCG@10 0.662, Cranfield 0.333; measured here 0.6635, 0.3311, ADI 0.4214). The English stemmer
was chosen on the development sets (SciFact train claims 0.6654 → 0.6947, Cranfield 0.3311 → 0.3518; fused with
the dense model it helped on both, ``docs/results.md``). Stemming is bm25s' own hook (``bm25s.tokenize(...,
stemmer=)``); PyStemmer is the stemmer bm25s documents.

>>> bm = BM25Retriever(["a cat sat", "a dog ran"])
>>> bm.search(["dog"], k=1)[1].tolist()
[[1]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

WORD_TOKENS = r"(?u)\b\w+\b"
"""Tokens: runs of word characters, single characters included."""

STEMMER = "english"
"""Default Snowball stemmer (a PyStemmer language; ``None``: no stemming)."""


def check_stemmer(language: str | None) -> str | None:
    """``language`` if PyStemmer has it (or ``None``); the validator of the ``bm25_stemmer`` settings."""
    stemmer_for(language)
    return language


def stemmer_for(language: str | None):  # noqa: ANN201 - a PyStemmer object, or None
    """PyStemmer's stemmer for ``language`` (``None`` → no stemming); ``ValueError`` names the languages it has."""
    if language is None:
        return None
    import Stemmer

    if language not in Stemmer.algorithms():
        raise ValueError(f"no Snowball stemmer '{language}'; choose one of {', '.join(Stemmer.algorithms())} "
                         "or null (no stemming)")
    return Stemmer.Stemmer(language)


class BM25Retriever:
    """An in-memory BM25 index over ``corpus_texts``; result ids are row indices into the corpus."""

    def __init__(self, corpus_texts: Sequence[str], *, k1: float = 0.9, b: float = 0.4, method: str = "lucene",
                 stopwords: str | None = "en", token_pattern: str = WORD_TOKENS, stemmer: str | None = STEMMER) -> None:
        import bm25s

        if not corpus_texts:
            raise ValueError("BM25 needs a non-empty corpus")
        self._bm25s = bm25s
        self.stopwords = stopwords
        self.token_pattern = token_pattern
        self.stemmer = stemmer
        self._stem = stemmer_for(stemmer)
        self.n_docs = len(corpus_texts)
        self.model = bm25s.BM25(k1=k1, b=b, method=method)
        tokens = bm25s.tokenize(list(corpus_texts), stopwords=stopwords, token_pattern=token_pattern,
                                stemmer=self._stem, show_progress=False)
        self.model.index(tokens, show_progress=False)

    def save(self, directory: str | Path) -> None:
        """Write the index (bm25s files) and the tokenization settings to ``directory``."""
        directory = Path(directory)
        self.model.save(str(directory), show_progress=False)
        (directory / "tokenization.json").write_text(json.dumps(
            {"stopwords": self.stopwords, "token_pattern": self.token_pattern, "stemmer": self.stemmer,
             "n_docs": self.n_docs}))

    @classmethod
    def load(cls, directory: str | Path) -> BM25Retriever:
        """An index written by :meth:`save` (queries are tokenized as the corpus was)."""
        import bm25s

        directory = Path(directory)
        settings = json.loads((directory / "tokenization.json").read_text())
        self = cls.__new__(cls)
        self._bm25s = bm25s
        self.stopwords, self.token_pattern = settings["stopwords"], settings["token_pattern"]
        self.stemmer = settings.get("stemmer")  # indexes written before stemming existed hold unstemmed words
        self._stem = stemmer_for(self.stemmer)
        self.n_docs = settings["n_docs"]
        self.model = bm25s.BM25.load(str(directory), show_progress=False)
        return self

    @property
    def index_bytes(self) -> int:
        """Bytes of the sparse score matrix (data, indices, indptr) and the vocabulary."""
        arrays = sum(int(a.nbytes) for a in self.model.scores.values() if isinstance(a, np.ndarray))
        vocab = sum(len(t.encode()) + 8 for t in self.model.vocab_dict)
        return arrays + vocab

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query: ``(scores float32 (q, k'), ids int64 (q, k'))``, k' = min(k, n_docs).

        A query with no known term gets score-0 results (bm25s pads with arbitrary documents at score 0).
        """
        k = min(k, self.n_docs)
        tokens = self._bm25s.tokenize(list(queries), stopwords=self.stopwords, token_pattern=self.token_pattern,
                                      stemmer=self._stem, show_progress=False)
        ids, scores = self.model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return scores.astype(np.float32), ids.astype(np.int64)
