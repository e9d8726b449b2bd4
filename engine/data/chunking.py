"""Token-aware chunking: pack paragraphs, then sentences, then words, into chunks of at most N tokens.

Token counts come from the embedding model's own tokenizer (``tokenizers`` fast tokenizer), so a chunk never
exceeds what the model reads. A chunk's text is an exact slice of its document (``start_char:end_char``); cuts
fall on paragraph, then sentence, then word boundaries, never inside a word.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?;])[\"')\]]*\s+(?=\S)")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class Chunk:
    idx: int
    start: int
    end: int
    n_tokens: int


class TokenCounter:
    """Counts a model's tokens (special tokens excluded) and knows its limits."""

    def __init__(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.special = len(self.tokenizer.encode("", add_special_tokens=True).ids)
        self.max_seq_length = _max_seq_length(model_dir)

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.encode(text, add_special_tokens=False).offsets


def _max_seq_length(model_dir: Path) -> int | None:
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = model_dir / name
        if path.is_file():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, int) and value < 1_000_000:
                return value
    return None


def _split(text: str, pattern: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        if m.start() > pos:
            out.append((pos, m.start()))
        pos = m.end()
    if pos < end:
        out.append((pos, end))
    return [(a, b) for a, b in out if text[a:b].strip()]


def _word_pieces(text: str, start: int, end: int, budget: int, counter: TokenCounter) -> list[tuple[int, int]]:
    """Cut an over-long sentence at word starts so that every piece has at most ``budget`` tokens."""
    offsets = counter.offsets(text[start:end])
    pieces, first = [], 0
    while first < len(offsets):
        last = min(first + budget, len(offsets))
        if last < len(offsets):
            cut = last
            while cut > first + 1 and not text[start + offsets[cut][0] - 1].isspace():
                cut -= 1
            if cut > first + 1:
                last = cut
        a, b = start + offsets[first][0], start + offsets[last - 1][1]
        pieces.append((a, b))
        first = last
    return pieces


def units(text: str, budget: int, counter: TokenCounter) -> list[Span]:
    """Paragraphs that fit, else their sentences that fit, else word-aligned pieces; with token counts."""
    paragraphs = _split(text, _PARAGRAPH, 0, len(text))
    counts = counter.count([text[a:b] for a, b in paragraphs])
    out: list[Span] = []
    for (a, b), n in zip(paragraphs, counts, strict=True):
        if n <= budget:
            out.append(Span(a, b, n))
            continue
        sentences = _split(text, _SENTENCE_END, a, b)
        for (sa, sb), sn in zip(sentences, counter.count([text[x:y] for x, y in sentences]), strict=True):
            if sn <= budget:
                out.append(Span(sa, sb, sn))
            else:
                pieces = _word_pieces(text, sa, sb, budget, counter)
                for (pa, pb), pn in zip(pieces, counter.count([text[x:y] for x, y in pieces]), strict=True):
                    out.append(Span(pa, pb, pn))
    return out


def chunk_text(text: str, counter: TokenCounter, max_tokens: int, overlap_tokens: int = 0,
               min_tokens: int = 0, reserved_tokens: int = 0) -> list[Chunk]:
    """Chunks of ``text`` of at most ``max_tokens`` tokens including special and ``reserved_tokens`` (e.g. a title).

    >>> chunk_text("One. Two.\\n\\nThree.", counter, max_tokens=64)  # doctest: +SKIP
    [Chunk(idx=0, start=0, end=17, n_tokens=5)]
    """
    limit = min(max_tokens, counter.max_seq_length or max_tokens)
    budget = max(limit - counter.special - reserved_tokens, 8)
    spans = units(text, budget, counter)
    groups: list[list[Span]] = []
    current: list[Span] = []
    for span in spans:
        if current and _tokens(current) + span.tokens > budget:
            groups.append(current)
            carry: list[Span] = []
            for prev in reversed(current):
                if _tokens(carry) + prev.tokens > overlap_tokens or _tokens(carry) + prev.tokens + span.tokens > budget:
                    break
                carry.insert(0, prev)
            current = carry if overlap_tokens else []
        current.append(span)
    if current:
        groups.append(current)
    if len(groups) >= 2 and _tokens(groups[-1]) < min_tokens:
        prev, last = groups[-2], groups[-1]
        merged = prev + [s for s in last if s not in prev]
        if _tokens(merged) <= budget:  # possible when the tail starts with overlap
            groups[-2:] = [merged]
        elif last[0] not in prev:  # no overlap: move sentences from the previous chunk to the tiny tail
            while _tokens(last) < min_tokens and len(prev) > 1 and _tokens(last) + prev[-1].tokens <= budget:
                last.insert(0, prev.pop())
    chunks = []
    exact = counter.count([text[g[0].start: g[-1].end] for g in groups])
    for i, (group, n) in enumerate(zip(groups, exact, strict=True)):
        chunks.append(Chunk(i, group[0].start, group[-1].end, n + counter.special))
    return chunks


def _tokens(spans: list[Span]) -> int:
    return sum(s.tokens for s in spans)
