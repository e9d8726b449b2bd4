"""Robust parsing of LLM outputs into queries: JSON, numbered lists, bullets, labelled lines, or one line.

Small models wrap their answers in preambles ("Here are 3 queries:"), markdown, labels ("Keyword query:"),
quotes and trailing chatter. :func:`parse_queries` returns the queries it is confident about, or ``[]`` when
nothing usable is there (the caller quarantines the raw text).

>>> parse_queries("Here are 3 queries:\\n1. What is X?\\n2) x uses\\n- **Paraphrase:** X does Y.")
['What is X?', 'x uses', 'X does Y.']
"""

from __future__ import annotations

import json
import re

_ITEM = re.compile(r"^\s*(?:(?:\d{1,2}|[a-zA-Z])[.):]|[-*•·+]|\(\d{1,2}\)|q\d{1,2}[.:)]?)\s+(.*\S)\s*$", re.IGNORECASE)
_LABEL = re.compile(r"^\s*(?:\*\*|__)?\s*(?:an?\s+)?(?:natural\s+|short\s+)?(?:question|query|keyword(?:s)?(?:\s+query)?|short\s+"
                    r"keyword\s+query|paraphrase(?:\s+of\s+a\s+claim)?|search\s+query|claim)\s*(?:\d+)?\s*"
                    r"(?:\*\*|__)?\s*[:\-–]\s*(?:\*\*|__)?\s*", re.IGNORECASE)
_ECHO = re.compile(r"^\s*(?:an?\s+)?(?:user\s+(?:would|might)\s+ask|the\s+passage\s+answers(?:\s+the\s+question)?)"
                   r"\s*:?\s*", re.IGNORECASE)
_LABEL_ONLY = re.compile(r"^(?:an?\s+)?(?:natural\s+question|short\s+keyword(?:\s+query)?|keyword\s+query|"
                         r"paraphrase(?:\s+of\s+(?:a|one)\s+claim)?|search\s+query|query|question)\W*$", re.IGNORECASE)
_PREAMBLE = re.compile(r"^(?:here\s+(?:are|is)|sure|certainly|okay|ok\b|the\s+following|below\s+are|these\s+are)"
                       r"|:\s*$", re.IGNORECASE)
_JSON_BLOCK = re.compile(r"(\[.*\]|\{.*\})", re.DOTALL)
_WRAP = "\"'`“”‘’«»"


def clean_query(text: str) -> str:
    """Strip markdown emphasis, labels, wrapping quotes and surrounding whitespace from one query."""
    text = text.strip()
    text = re.sub(r"(\*\*|__)(.*?)\1", r"\2", text)
    text = _LABEL.sub("", text, count=1)
    text = _ECHO.sub("", text, count=1)
    text = text.strip().strip("*_").strip()
    while len(text) >= 2 and text[0] in _WRAP and text[-1] in _WRAP:
        text = text[1:-1].strip()
    if _LABEL_ONLY.match(text):
        return ""
    if text and text[0] in _WRAP and text.count(text[0]) == 1:
        text = text[1:].strip()
    if text and text[-1] in _WRAP and sum(text.count(c) for c in _WRAP) == 1:
        text = text[:-1].strip()
    return " ".join(text.split())


def _from_json(text: str) -> list[str] | None:
    match = _JSON_BLOCK.search(text)
    if not match:
        return None
    try:
        data = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        for key in ("queries", "questions", "query", "items", "results"):
            if key in data:
                data = data[key]
                break
        else:
            data = list(data.values())
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list):
        return None
    out = []
    for item in data:
        if isinstance(item, dict):
            item = next((item[k] for k in ("query", "question", "text") if isinstance(item.get(k), str)), None)
        if isinstance(item, str) and item.strip():
            out.append(item)
    return out or None


def _from_lines(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    items = []
    for i, ln in enumerate(lines):
        if not (m := _ITEM.match(ln)):
            continue
        item = m.group(1)
        follower = lines[i + 1] if i + 1 < len(lines) else ""
        if not clean_query(item) and follower and not _ITEM.match(follower):  # "1. Question:" + query below
            item = follower
        items.append(item)
    if items:
        return items
    labelled = [ln for ln in lines if _LABEL.match(ln)]
    if labelled:
        return labelled
    body = [ln for ln in lines if not _PREAMBLE.search(ln.strip())]
    if len(body) == 1 or (body and len(body) <= 3 and all(len(ln.split()) <= 25 for ln in body)):
        return body
    return []


def parse_queries(text: str, limit: int | None = None) -> list[str]:
    """Queries found in an LLM output, cleaned, in order, at most ``limit`` (``[]`` when unparseable)."""
    text = re.sub(r"```(?:json|text)?", "\n", text or "")
    raw = _from_json(text) if ("[" in text or "{" in text) else None
    if raw is None:
        raw = _from_lines(text)
    out = []
    for item in raw:
        query = clean_query(item)
        if query and not _PREAMBLE.search(query) and any(c.isalnum() for c in query):
            out.append(query)
    return out[:limit] if limit else out


def parse_single(text: str) -> list[str]:
    """One query from a per-type output: the first parsed item (``[]`` when unparseable)."""
    return parse_queries(text, limit=1)
