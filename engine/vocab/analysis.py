"""Token-to-word ratio, [UNK] rate and the most fragmented frequent terms of a corpus, for one or more tokenizers.

Definitions (the same for every tokenizer, so they compare):

- **word**: a maximal run of Unicode letters and digits (regex ``[^\\W_]+``) in the cleaned document text
  (NFKC, as ``ingest`` leaves it). ``IL-6`` is two words, ``p53`` one, ``β-cell`` two; punctuation is no word.
- **token-to-word ratio** (the decision metric): tokens the tokenizer makes of the words, over the number of words
  — each word tokenized on its own, special tokens excluded (fertility). For BERT-style tokenizers, which split on
  whitespace and punctuation before WordPiece, this is exactly the tokens those words get in running text.
- **all-token ratio**: every token of the full text (punctuation included, no special tokens) over words.
- **[UNK] rate**: [UNK] tokens over all tokens of the full text.
- **term**: a word after the base tokenizer's normalizer (lower-cased for uncased BERT models), i.e. the form that
  vocabulary extension adds. A **fragmented** term splits into at least ``min_pieces`` base-tokenizer pieces.

>>> analyzer = VocabAnalyzer([load_tokenizer("all-MiniLM-L6-v2")])
>>> analyzer.add(["Cardiomyopathy in mice."])
>>> round(analyzer.result().tokenizers[0].ratio, 2)  # doctest: +SKIP
2.0
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

WORD = re.compile(r"[^\W_]+")
"""What a word is: a maximal run of Unicode letters and digits."""


def words(text: str) -> list[str]:
    """The words of ``text`` (see the module docstring)."""
    return WORD.findall(text)


@dataclass
class TokenizerView:
    """A fast tokenizer with the facts the analysis needs."""

    name: str
    tokenizer: Tokenizer
    unk_id: int | None
    special_ids: frozenset[int]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def normalize(self, word: str) -> str:
        norm = self.tokenizer.normalizer
        return norm.normalize_str(word) if norm is not None else word


def tokenizer_view(tokenizer: Tokenizer, name: str) -> TokenizerView:
    """Wrap a ``tokenizers.Tokenizer`` (truncation and padding switched off)."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    unk_token = getattr(tokenizer.model, "unk_token", None)
    unk_id = tokenizer.token_to_id(unk_token) if unk_token else None
    specials = frozenset(int(i) for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special)
    return TokenizerView(name, tokenizer, unk_id, specials)


def load_tokenizer(ref: str | Path, name: str | None = None) -> TokenizerView:
    """A tokenizer from a packaged model name, a model directory, or a ``tokenizer.json`` file."""
    from embedforge.models import resolve_model

    path = resolve_model(str(ref))
    if path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
    elif (path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    else:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True).backend_tokenizer
        except (OSError, ValueError, AttributeError) as exc:
            raise FileNotFoundError(f"{path}: no tokenizer.json and no fast tokenizer to load ({exc})") from exc
    return tokenizer_view(tokenizer, name or str(ref))


@dataclass
class TokenizerStats:
    """Counts for one tokenizer over the corpus."""

    name: str
    vocab_size: int
    words: int = 0
    word_tokens: int = 0
    all_tokens: int = 0
    unk_tokens: int = 0
    doc_ratios: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Token-to-word ratio (tokens of the words / words)."""
        return self.word_tokens / self.words if self.words else float("nan")

    @property
    def all_token_ratio(self) -> float:
        return self.all_tokens / self.words if self.words else float("nan")

    @property
    def unk_rate(self) -> float:
        return self.unk_tokens / self.all_tokens if self.all_tokens else 0.0

    def summary(self) -> dict[str, Any]:
        q = np.percentile(self.doc_ratios, [5, 50, 95]) if self.doc_ratios else [float("nan")] * 3
        return {"name": self.name, "vocab_size": self.vocab_size, "words": self.words,
                "word_tokens": self.word_tokens, "all_tokens": self.all_tokens, "unk_tokens": self.unk_tokens,
                "ratio": round(self.ratio, 4), "all_token_ratio": round(self.all_token_ratio, 4),
                "unk_rate": round(self.unk_rate, 6), "doc_ratio_p5": round(float(q[0]), 4),
                "doc_ratio_p50": round(float(q[1]), 4), "doc_ratio_p95": round(float(q[2]), 4)}


@dataclass(frozen=True)
class FragmentedTerm:
    """A term, how often it occurs, and the pieces the base tokenizer makes of it."""

    term: str
    frequency: int
    pieces: tuple[str, ...]


@dataclass
class VocabAnalysis:
    """The result: corpus counts, per-tokenizer stats (the first is the base), and the term frequencies."""

    documents: int
    documents_without_words: int
    tokenizers: list[TokenizerStats]
    term_counts: Counter[str]
    base: TokenizerView

    @property
    def words(self) -> int:
        return self.tokenizers[0].words

    def fragmented_terms(self, min_pieces: int = 3, top: int = 50, min_chars: int = 4,
                         min_frequency: int = 2) -> list[FragmentedTerm]:
        """The ``top`` most frequent terms the base tokenizer splits into ``>= min_pieces`` pieces.

        Only terms with a letter, at least ``min_chars`` characters and ``min_frequency`` occurrences count;
        ties are broken alphabetically so the list is stable.
        """
        candidates = [(t, n) for t, n in self.term_counts.items()
                      if n >= min_frequency and len(t) >= min_chars and " " not in t and any(c.isalpha() for c in t)]
        candidates.sort(key=lambda x: (-x[1], x[0]))
        out: list[FragmentedTerm] = []
        for start in range(0, len(candidates), 2048):
            block = candidates[start:start + 2048]
            encodings = self.base.tokenizer.encode_batch([t for t, _ in block], add_special_tokens=False)
            for (term, n), enc in zip(block, encodings, strict=True):
                if len(enc.tokens) >= min_pieces:
                    out.append(FragmentedTerm(term, n, tuple(enc.tokens)))
                    if len(out) >= top:
                        return out
        return out

    def decision(self, threshold: float) -> dict[str, Any]:
        """Whether the base tokenizer shreds this corpus: its ratio against ``threshold``."""
        ratio = self.tokenizers[0].ratio
        return {"metric": "token_to_word_ratio", "ratio": round(ratio, 4), "threshold": threshold,
                "extend": bool(ratio > threshold),
                "reason": f"ratio {ratio:.3f} {'>' if ratio > threshold else '<='} threshold {threshold}"}


class VocabAnalyzer:
    """Streams document batches through every tokenizer; memory is one cache entry per distinct word."""

    def __init__(self, tokenizers: list[TokenizerView]) -> None:
        if not tokenizers:
            raise ValueError("at least one tokenizer (the base) is needed")
        self.views = tokenizers
        self.stats = [TokenizerStats(v.name, v.vocab_size) for v in tokenizers]
        self._pieces: list[dict[str, int]] = [{} for _ in tokenizers]
        self.word_counts: Counter[str] = Counter()
        self.documents = 0
        self.documents_without_words = 0

    def add(self, texts: Iterable[str]) -> None:
        """Count one batch of document texts."""
        texts = list(texts)
        doc_words = [words(t) for t in texts]
        batch_counts: Counter[str] = Counter()
        for ws in doc_words:
            batch_counts.update(ws)
        self.word_counts.update(batch_counts)
        self.documents += len(texts)
        for view, stats, cache in zip(self.views, self.stats, self._pieces, strict=True):
            new = [w for w in batch_counts if w not in cache]
            for w, enc in zip(new, view.tokenizer.encode_batch(new, add_special_tokens=False), strict=True):
                cache[w] = len(enc.ids)
            for enc in view.tokenizer.encode_batch(texts, add_special_tokens=False):
                stats.all_tokens += len(enc.ids)
                if view.unk_id is not None:
                    stats.unk_tokens += enc.ids.count(view.unk_id)
            for ws in doc_words:
                if not ws:
                    continue
                pieces = sum(cache[w] for w in ws)
                stats.words += len(ws)
                stats.word_tokens += pieces
                stats.doc_ratios.append(pieces / len(ws))
        self.documents_without_words += sum(1 for ws in doc_words if not ws)

    def result(self) -> VocabAnalysis:
        """The analysis so far; raises ``ValueError`` when no word was seen (empty or binary corpus)."""
        if self.stats[0].words == 0:
            raise ValueError(f"no words in the corpus ({self.documents} documents): is it empty, binary, or "
                             "not text?")
        base = self.views[0]
        terms: Counter[str] = Counter()
        for word, n in self.word_counts.items():
            terms[base.normalize(word).strip()] += n
        terms.pop("", None)
        return VocabAnalysis(self.documents, self.documents_without_words, self.stats, terms, base)


def analyze(batches: Iterable[list[str]], tokenizers: list[TokenizerView]) -> VocabAnalysis:
    """Run :class:`VocabAnalyzer` over batches of document texts."""
    analyzer = VocabAnalyzer(tokenizers)
    for batch in batches:
        analyzer.add(batch)
    return analyzer.result()
