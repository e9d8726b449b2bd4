"""Token-aware chunking: pack paragraphs, then sentences, then words, into chunks of at most N tokens.

Token counts come from the embedding model's own tokenizer (``tokenizers`` fast tokenizer), so a chunk never
exceeds what the model reads. A chunk's text is an exact slice of its document (``start_char:end_char``); cuts
fall on paragraph, then sentence, then word boundaries, never inside a word of normal length.

Chunks are bounded in characters too (``max_chars``): a tokenizer reads a whole over-long "word" (a 1.5 M
character run without spaces) as one unknown token, so a token limit alone lets such a chunk grow without
bound. Words longer than ``max_word_chars`` are cut into pieces of that many characters, and every cut word is
counted (:class:`ChunkStats`).
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


@dataclass
class ChunkStats:
    """What bounding in characters changed, for the manifest."""

    long_words_split: int = 0
    """Words longer than ``max_word_chars`` that were cut into pieces."""
    long_word_chars: int = 0
    """Characters in those words."""


class TokenCounter:
    """Counts a model's tokens (special tokens excluded) and knows its limits."""

    def __init__(self, model_dir: str | Path, role: str | None = None) -> None:
        from embedforge.models import tokenizer_dir

        model_dir = tokenizer_dir(model_dir, role)  # a Router model: the tokenizer of the role's route
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


def _atoms(text: str, start: int, end: int, counter: TokenCounter, max_word_chars: int) -> list[tuple[int, int]]:
    """Token spans of ``text[start:end]``; a word longer than ``max_word_chars`` (which a tokenizer would read as
    one unknown token) is tokenized in windows of ``max_word_chars`` characters instead."""
    segments: list[tuple[int, int, bool]] = []
    pos = start
    for m in re.finditer(rf"\S{{{max_word_chars + 1},}}", text[start:end]):
        a, b = start + m.start(), start + m.end()
        if a > pos:
            segments.append((pos, a, False))
        segments.extend((w, min(w + max_word_chars, b), True) for w in range(a, b, max_word_chars))
        pos = b
    if pos < end:
        segments.append((pos, end, False))
    encoded = counter.tokenizer.encode_batch([text[a:b] for a, b, _ in segments], add_special_tokens=False)
    return [(a + x, a + y) for (a, _, _), e in zip(segments, encoded, strict=True) for x, y in e.offsets]


def _word_pieces(text: str, start: int, end: int, budget: int, counter: TokenCounter, max_chars: int,
                 max_word_chars: int) -> list[tuple[int, int]]:
    """Cut an over-long sentence at word starts so that every piece has at most ``budget`` tokens and
    ``max_chars`` characters (inside a word only when the word itself is over-long)."""
    offsets = _atoms(text, start, end, counter, max_word_chars)
    pieces, first = [], 0
    while first < len(offsets):
        last = first + 1
        while (last < len(offsets) and last - first < budget
               and offsets[last][1] - offsets[first][0] <= max_chars):
            last += 1
        if last < len(offsets):
            cut = last
            while cut > first + 1 and not text[offsets[cut][0] - 1].isspace():
                cut -= 1
            if cut > first + 1:
                last = cut
        pieces.append((offsets[first][0], offsets[last - 1][1]))
        first = last
    return pieces


def units(text: str, budget: int, counter: TokenCounter, max_chars: int = 1 << 62,
          max_word_chars: int = 1 << 62) -> list[Span]:
    """Paragraphs that fit, else their sentences that fit, else word-aligned pieces; with token counts.
    "Fit" means at most ``budget`` tokens, ``max_chars`` characters and no word over ``max_word_chars``."""
    long_word = re.compile(rf"\S{{{max_word_chars + 1},}}") if max_word_chars < len(text) else None

    def measured(spans: list[tuple[int, int]]) -> list[tuple[int, int, int | None]]:
        """Spans with their token counts; None (not counted) when too long in characters or holding a long word."""
        cheap = [b - a <= max_chars and not (long_word and long_word.search(text, a, b)) for a, b in spans]
        counts = iter(counter.count([text[a:b] for (a, b), ok in zip(spans, cheap, strict=True) if ok]))
        return [(a, b, next(counts) if ok else None) for (a, b), ok in zip(spans, cheap, strict=True)]

    out: list[Span] = []
    for a, b, n in measured(_split(text, _PARAGRAPH, 0, len(text))):
        if n is not None and n <= budget:
            out.append(Span(a, b, n))
            continue
        for sa, sb, sn in measured(_split(text, _SENTENCE_END, a, b)):
            if sn is not None and sn <= budget:
                out.append(Span(sa, sb, sn))
            else:
                pieces = _word_pieces(text, sa, sb, budget, counter, max_chars, max_word_chars)
                for (pa, pb), pn in zip(pieces, counter.count([text[x:y] for x, y in pieces]), strict=True):
                    out.append(Span(pa, pb, pn))
    return out


def chunk_text(text: str, counter: TokenCounter, max_tokens: int, overlap_tokens: int = 0,
               min_tokens: int = 0, reserved_tokens: int = 0, max_chars: int | None = None,
               max_word_chars: int = 100, stats: ChunkStats | None = None) -> list[Chunk]:
    """Chunks of ``text`` of at most ``max_tokens`` tokens including special and ``reserved_tokens`` (e.g. a title),
    and at most ``max_chars`` characters (default: 16 per token of the limit).

    >>> chunk_text("One. Two.\\n\\nThree.", counter, max_tokens=64)  # doctest: +SKIP
    [Chunk(idx=0, start=0, end=17, n_tokens=5)]
    """
    limit = min(max_tokens, counter.max_seq_length or max_tokens)
    budget = max(limit - counter.special - reserved_tokens, 8)
    max_chars = max_chars or 16 * limit
    if stats is not None:
        for m in re.finditer(rf"\S{{{max_word_chars + 1},}}", text):
            stats.long_words_split += 1
            stats.long_word_chars += m.end() - m.start()
    spans = units(text, budget, counter, max_chars, max_word_chars)

    def fits(group: list[Span], span: Span) -> bool:
        return _tokens(group) + span.tokens <= budget and (not group or span.end - group[0].start <= max_chars)

    groups: list[list[Span]] = []
    current: list[Span] = []
    for span in spans:
        if current and not fits(current, span):
            groups.append(current)
            carry: list[Span] = []
            for prev in reversed(current):
                if _tokens(carry) + prev.tokens > overlap_tokens or not fits([prev, *carry], span):
                    break
                carry.insert(0, prev)
            current = carry if overlap_tokens else []
        current.append(span)
    if current:
        groups.append(current)
    if len(groups) >= 2 and _tokens(groups[-1]) < min_tokens:
        prev, last = groups[-2], groups[-1]
        merged = prev + [s for s in last if s not in prev]
        if _tokens(merged) <= budget and merged[-1].end - merged[0].start <= max_chars:  # when the tail starts with overlap
            groups[-2:] = [merged]
        elif last[0] not in prev:  # no overlap: move sentences from the previous chunk to the tiny tail
            while _tokens(last) < min_tokens and len(prev) > 1 and fits(last, prev[-1]) and \
                    last[-1].end - prev[-1].start <= max_chars:
                last.insert(0, prev.pop())
    chunks = []
    exact = counter.count([text[g[0].start: g[-1].end] for g in groups])
    for i, (group, n) in enumerate(zip(groups, exact, strict=True)):
        chunks.append(Chunk(i, group[0].start, group[-1].end, n + counter.special))
    return chunks


def _tokens(spans: list[Span]) -> int:
    return sum(s.tokens for s in spans)


def document_chunks(title: str | None, text: str, counter: TokenCounter, max_tokens: int, overlap_tokens: int = 0,
                    min_tokens: int = 0, max_chars: int | None = None, max_word_chars: int = 100,
                    stats: ChunkStats | None = None, title_tokens: int | None = None) -> list[Chunk]:
    """A document's chunks by the chunk stage's rule: every chunk is embedded with the title in front, so the
    title's tokens (at most a quarter of ``max_tokens``) are reserved in each; a title-only document is one chunk
    (``start == end == 0``) holding its title. ``title_tokens`` saves a count the caller made in a batch."""
    n_title = (title_tokens if title_tokens is not None else counter.count([title])[0]) if title else 0
    reserved = min(n_title + 1, max_tokens // 4) if title else 0
    chunks = chunk_text(text, counter, max_tokens, overlap_tokens, min_tokens, reserved, max_chars, max_word_chars,
                        stats)
    if not chunks and title:
        chunks = [Chunk(0, 0, 0, n_title + counter.special)]
    return chunks


def passages(titles: list[str], texts: list[str], counter: TokenCounter,
             max_tokens: int) -> tuple[list[str], list[int]]:
    """Every document split into passages of at most ``max_tokens`` tokens (:func:`document_chunks`, no overlap),
    each as it is embedded (``title + " " + slice``); with the row of its document, in document order. A document
    with neither title nor text gives one empty passage, so every document has at least one."""
    from embedforge.data.schemas import passage_text

    out: list[str] = []
    owner: list[int] = []
    title_tokens = counter.count([t or "" for t in titles])
    for row, (title, text, n_title) in enumerate(zip(titles, texts, title_tokens, strict=True)):
        chunks = document_chunks(title, text, counter, max_tokens, min_tokens=32, title_tokens=n_title)
        for c in chunks or [Chunk(0, 0, 0, counter.special)]:
            out.append(passage_text(title, text[c.start:c.end]))
            owner.append(row)
    return out, owner
