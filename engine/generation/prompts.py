"""Prompt templates → chat messages per chunk, and the hash that identifies a prompt setup.

A ``list`` prompt asks for N queries at once; ``per_type`` makes one prompt per query type (question,
keywords, paraphrase, ...) that asks for one query each.

>>> p = PromptBuilder(template="Passage: {text}\\nWrite {n} queries.", system=None, n=3)
>>> p.messages("Cats purr.", "")[0]["content"]
'Passage: Cats purr.\\nWrite 3 queries.'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

Messages = list[dict[str, str]]
FIELDS = ("text", "title", "title_part", "n")


@dataclass(frozen=True)
class Prompt:
    """One chat prompt for one chunk; ``label`` is the query type for per-type prompts (or ``list``)."""

    chunk_index: int
    label: str
    messages: Messages
    expected: int
    """Queries the prompt asks for."""


@dataclass
class PromptBuilder:
    """Fills a template with a chunk's text and title (text cut at a word boundary to ``max_chars``)."""

    template: str
    system: str | None
    n: int
    max_chars: int = 1500
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_template(self.template)

    def messages(self, text: str, title: str | None) -> Messages:
        body = self.template.format(text=cut_text(text, self.max_chars), title=title or "",
                                    title_part=f" (title: {title})" if title else "", n=self.n)
        out: Messages = [{"role": "system", "content": self.system}] if self.system else []
        return [*out, {"role": "user", "content": body}]

    def hash(self) -> str:
        """Hash of template, system message, count, cut length and sampling settings (16 hex)."""
        return prompt_hash({"template": self.template, "system": self.system, "n": self.n,
                            "max_chars": self.max_chars, "sampling": self.sampling})


def check_template(template: str) -> None:
    """Raise ``ValueError`` naming an unknown ``{field}`` of a template (known: text, title, title_part, n)."""
    try:
        template.format(text="", title="", title_part="", n=1)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"prompt template {template[:60]!r}: bad field {exc}; known fields: {', '.join(FIELDS)}") from None


def cut_text(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters at a word boundary (with " …" when cut)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut + " …"


def prompt_hash(obj: Any) -> str:
    """16-hex sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_prompts(chunks: list[dict[str, Any]], builders: dict[str, PromptBuilder]) -> list[Prompt]:
    """One prompt per (chunk, builder); ``builders`` maps a label (``list`` or a query type) to its builder."""
    prompts = []
    for i, chunk in enumerate(chunks):
        for label, builder in builders.items():
            prompts.append(Prompt(i, label, builder.messages(chunk["text"], chunk.get("title")), builder.n))
    return prompts
