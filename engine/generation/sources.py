"""Query sources that need no LLM: document titles, inverse-cloze sentences and tf-idf keyword queries.

A small CPU model writes generic queries; these sources give grounded ones whose value can be measured
separately (each row records its ``kind``):

- ``title``: a document's title is a query for its first chunk (where titles exist);
- ``ict`` (inverse cloze task): a sentence of a chunk is a query for that chunk (the trainer may remove the
  sentence from the positive);
- ``keyword``: the chunk's most salient terms by tf-idf against the whole corpus, in text order.

>>> idf = KeywordIdf.fit(["cats purr loudly", "dogs bark loudly"])
>>> keyword_query("Cats purr and cats sleep loudly", idf, 2)
'cats sleep'
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]*[A-Za-z0-9]|[A-Za-z]")
_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)")
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each either et al few for from further had has have having he
her here hers him his how however i if in into is it its itself just may me might more most must my no nor not of
off on once only or other our ours out over own per same she should so some such than that the their them then
there these they this those through thus to too under until up upon us very via was we were what when where which
while who whom why will with within without would yet you your using used use based two one three also show shows
showed shown study studies result results found find may might new well whether among across many much
""".split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner hyphens)."""
    return [w.lower() for w in _WORD.findall(text)]


def stable_fraction(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` (for deterministic sampling and splits)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def title_query(chunk_idx: int, title: str | None, min_words: int = 2) -> str | None:
    """The document title as a query for the document's first chunk (None for other chunks or short titles)."""
    if chunk_idx != 0 or not title:
        return None
    title = " ".join(title.split()).rstrip(".")
    return title if len(title.split()) >= min_words else None


def sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after . ! ? and closing quotes or brackets)."""
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]


def ict_queries(chunk_id: str, text: str, count: int, min_words: int, seed: int) -> list[str]:
    """``count`` sentences of a chunk picked by a fixed hash (chunks of fewer than two sentences give none)."""
    candidates = [s for s in sentences(text) if len(s.split()) >= min_words]
    if count <= 0 or len(sentences(text)) < 2 or not candidates:
        return []
    ranked = sorted(candidates, key=lambda s: stable_fraction(seed, chunk_id, s))
    return ranked[:count]


@dataclass
class KeywordIdf:
    """Document frequencies of the corpus's content words (chunks are the documents)."""

    df: Counter
    n_docs: int

    @classmethod
    def fit(cls, texts: Iterable[str]) -> KeywordIdf:
        df: Counter = Counter()
        n = 0
        for text in texts:
            df.update({w for w in words(text) if w not in STOPWORDS and len(w) > 2})
            n += 1
        return cls(df, n)

    def idf(self, word: str) -> float:
        return math.log((1 + self.n_docs) / (1 + self.df.get(word, 0))) + 1.0


def keyword_query(text: str, idf: KeywordIdf, terms: int) -> str | None:
    """The ``terms`` highest tf-idf content words of ``text``, in order of first appearance (None if too few)."""
    tokens = [w for w in words(text) if w not in STOPWORDS and len(w) > 2 and not w.isdigit()]
    if len(set(tokens)) < min(2, terms):
        return None
    tf = Counter(tokens)
    first = {}
    for i, w in enumerate(tokens):
        first.setdefault(w, i)
    top = sorted(tf, key=lambda w: (-(1 + math.log(tf[w])) * idf.idf(w), first[w]))[:terms]
    return " ".join(sorted(top, key=first.__getitem__))
