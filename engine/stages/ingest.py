"""Stage ``ingest``: sources → cleaned, versioned document shards.

Reads every source in order, cleans each document (unicode, whitespace, HTML, optional PII redaction), gives it
a version (content hash), removes exact duplicates, and quarantines what cannot be used: bad JSON or UTF-8,
missing fields, empty or oversized documents, and a reused id with different content. The stage fails when the
quarantined share passes ``max_bad_share``. A re-run after a kill re-reads the sources (cheap) and writes only
the shards that are missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from embedforge.configs.ingest import IngestConfig
from embedforge.data import cleaning
from embedforge.data.ingest import BadRow, Record, iter_source, reason_kind
from embedforge.data.schemas import DOCUMENTS
from embedforge.data.shards import shard_name
from embedforge.progress import track
from embedforge.stages.base import StageContext, StageFailed

log = logging.getLogger("embedforge.ingest")


def clean(record: Record, cfg: IngestConfig, counts: dict[str, int]) -> tuple[str, str] | str:
    """(title, text) after cleaning, or the reason the document is unusable."""
    title, text = record.title, record.text
    if cfg.strip_html and (record.is_html or cleaning.looks_like_html(text)):
        html_title, text = cleaning.html_to_text(text)
        title = title or html_title
        counts["html_stripped"] = counts.get("html_stripped", 0) + 1
    if cfg.normalize_unicode:
        title, text = cleaning.normalize_text(title), cleaning.normalize_text(text)
    if cfg.redact_pii:
        text, found = cleaning.redact_pii(text)
        title, found_t = cleaning.redact_pii(title)
        for kind, n in {**found, **{k: found[k] + found_t[k] for k in found}}.items():
            if n:
                counts[f"pii_{kind}"] = counts.get(f"pii_{kind}", 0) + n
    if len(title.strip()) + len(text.strip()) < cfg.min_chars:  # a title alone is content
        return "empty document after cleaning"
    if len(text) > cfg.max_chars:
        return f"document over the size limit ({len(text)} > {cfg.max_chars} characters)"
    return title, text


def documents(ctx: StageContext, counts: dict[str, int]) -> Iterator[dict[str, Any] | BadRow]:
    """Cleaned, versioned, deduplicated documents (and bad rows) from every source, in order."""
    cfg: IngestConfig = ctx.config
    seen_versions: set[str] = set()
    id_versions: dict[str, str] = {}
    for src in cfg.sources:
        for item in iter_source(src):
            counts["rows_in"] += 1
            if isinstance(item, BadRow):
                yield item
                continue
            cleaned = clean(item, cfg, counts)
            if isinstance(cleaned, str):
                yield BadRow(item.source, cleaned, (item.text or item.title)[:2000])
                continue
            title, text = cleaned
            version = cleaning.content_hash(title, text)
            previous = id_versions.get(item.doc_id)
            if previous is not None and previous != version:
                yield BadRow(item.source, f"duplicate id '{item.doc_id}' with different content", text[:2000])
                continue
            if cfg.dedup and version in seen_versions:
                counts["duplicates_removed"] += 1
                continue
            seen_versions.add(version)
            id_versions[item.doc_id] = version
            yield {"doc_id": item.doc_id, "doc_version": version, "title": title, "text": text,
                   "source": item.source, "meta": json.dumps(item.meta, ensure_ascii=False, default=str)}


def run(ctx: StageContext) -> None:
    cfg: IngestConfig = ctx.config
    writer = ctx.writer()
    counts = {"rows_in": 0, "duplicates_removed": 0}
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    index = 0
    seen_rows_in = 0

    def flush() -> None:
        nonlocal rows, bad, index, seen_rows_in
        name = shard_name(index)
        stats = {"rows_in": counts["rows_in"] - seen_rows_in}
        if not writer.done(name):
            writer.write(name, pa.Table.from_pylist(rows, schema=DOCUMENTS), stats=stats, quarantine=bad)
        seen_rows_in = counts["rows_in"]
        rows, bad, index = [], [], index + 1

    with track("ingest", unit="docs") as progress:
        for item in documents(ctx, counts):
            if isinstance(item, BadRow):
                bad.append(item.as_quarantine())
                log.debug("quarantined %s: %s", item.source, item.reason)
            else:
                rows.append(item)
                progress.advance(1)
            if len(rows) >= cfg.shard_rows:
                flush()
        if rows or bad or index == 0:
            flush()

    totals = writer.totals()
    bad_total = totals.get("quarantined", 0)
    ctx.counts.update({k: v for k, v in counts.items() if k not in ("rows_in",)})
    ctx.extra["reasons"] = _reasons(writer.out_dir)
    share = bad_total / max(totals.get("rows_in", 0), 1)
    if totals.get("rows_out", 0) == 0:
        raise StageFailed(f"ingest: no usable documents in {', '.join(s.path for s in cfg.sources)} "
                          f"({int(bad_total)} quarantined; see {writer.out_dir / 'quarantine'})")
    if share > cfg.max_bad_share:
        raise StageFailed(f"ingest: {int(bad_total)} of {int(totals['rows_in'])} rows quarantined ({share:.1%}), above "
                          f"max_bad_share={cfg.max_bad_share:.1%}; reasons: {ctx.extra['reasons']}; "
                          f"rows in {writer.out_dir / 'quarantine'}")


def _reasons(out_dir: Path) -> dict[str, int]:
    """Quarantined rows per kind of reason (row details such as byte offsets stay in each quarantine row)."""
    reasons: dict[str, int] = {}
    for path in sorted((out_dir / "quarantine").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            kind = row.get("kind") or reason_kind(row["reason"])
            reasons[kind] = reasons.get(kind, 0) + 1
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
