"""Readers for every input format, yielding documents or bad rows (never dropping silently).

Formats: JSONL (one object per line), Parquet, BEIR directories (``corpus.jsonl``), and folders of
``.txt``/``.md``/``.html`` files. Each record carries ``source`` = ``file:line`` (or ``file#row``) for lineage
and quarantine messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedforge.configs.ingest import SourceConfig

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass
class Record:
    """A raw document as read, before cleaning."""

    doc_id: str
    title: str
    text: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    is_html: bool = False


@dataclass
class BadRow:
    """An input row that cannot be used, with where it came from and why."""

    source: str
    reason: str
    raw: str = ""

    def as_quarantine(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "raw": self.raw[:2000]}


def resolve_path(path: str) -> Path:
    """``builtin:adi`` → the corpus shipped in the package; ``beir:scifact`` → the dataset cache
    (``embedforge datasets get``, :mod:`embedforge.data.datasets`); anything else as a path."""
    if path.startswith("beir:"):
        from embedforge.data.datasets import resolve_dataset

        return resolve_dataset(path)
    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        target = BUILTIN_DIR / name
        if not target.exists():
            known = sorted(p.name for p in BUILTIN_DIR.iterdir()) if BUILTIN_DIR.is_dir() else []
            raise FileNotFoundError(f"no built-in corpus '{name}' (built-in: {', '.join(known)})")
        return target
    return Path(path).expanduser()


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "folder"
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if path.suffix == ".parquet":
        return "parquet"
    raise ValueError(f"{path}: cannot tell the format from the name; set 'format' (jsonl, parquet, beir, folder)")


def iter_source(src: SourceConfig) -> Iterator[Record | BadRow]:
    """All records of one source, in a stable order. ``source`` of a built-in corpus reads ``builtin:NAME/...``."""
    path = resolve_path(src.path)
    if not path.exists():
        raise FileNotFoundError(f"ingest source not found: {src.path}")
    fmt = detect_format(path, src.format)
    if fmt == "beir":
        items = _iter_mapping_rows(_jsonl_rows(path / "corpus.jsonl"), src, id_default="_id")
    elif fmt == "jsonl":
        items = _iter_mapping_rows(_jsonl_rows(path), src)
    elif fmt == "parquet":
        items = _iter_mapping_rows(_parquet_rows(path), src)
    else:
        items = _iter_folder(path, src)
    if not src.path.startswith(("builtin:", "beir:")):
        yield from items
        return
    prefix = str(path)
    for item in items:
        item.source = src.path + item.source[len(prefix):] if item.source.startswith(prefix) else item.source
        yield item


def _source_files(path: Path, src: SourceConfig) -> list[Path]:
    fmt = detect_format(path, src.format)
    if fmt == "beir":
        return [path / "corpus.jsonl"]
    if fmt == "folder":
        return sorted(p for p in path.glob(src.glob) if p.is_file())
    return [path]


def source_fingerprint(src: SourceConfig, edge: int = 1 << 20) -> str:
    """Quick content fingerprint of a source: relative names, sizes, first and last MiB of each file."""
    import hashlib

    path = resolve_path(src.path)
    if not path.exists():
        return f"missing:{src.path}"
    digest = hashlib.sha256()
    for file in _source_files(path, src):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{size}".encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(edge))
            if size > 2 * edge:
                fh.seek(size - edge)
                digest.update(fh.read(edge))
    return digest.hexdigest()[:16]


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadRow]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, BadRow(where, f"invalid UTF-8 at byte {exc.start}", raw[:200].decode("utf-8", "replace"))
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, BadRow(where, f"malformed JSON: {exc.msg} (column {exc.colno})", line)
                continue
            if not isinstance(obj, dict):
                yield where, BadRow(where, f"expected a JSON object, got {type(obj).__name__}", line)
                continue
            yield where, obj


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadRow]]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            yield f"{path}#{row}", obj
            row += 1


def _pick_id_field(obj: dict[str, Any], declared: str, default: str | None) -> str | None:
    if declared != "auto":
        return declared
    for name in ((default,) if default else ()) + ("_id", "id", "doc_id"):
        if name in obj:
            return name
    return None


def _iter_mapping_rows(rows: Iterator[tuple[str, dict[str, Any] | BadRow]], src: SourceConfig,
                       id_default: str | None = None) -> Iterator[Record | BadRow]:
    for where, obj in rows:
        if isinstance(obj, BadRow):
            yield obj
            continue
        raw = json.dumps(obj, ensure_ascii=False, default=str)
        id_field = _pick_id_field(obj, src.id_field, id_default)
        if id_field is None or obj.get(id_field) in (None, ""):
            yield BadRow(where, f"missing id field ({src.id_field if src.id_field != 'auto' else '_id/id/doc_id'})", raw)
            continue
        text = obj.get(src.text_field)
        if text is None:
            yield BadRow(where, f"missing text field '{src.text_field}'", raw)
            continue
        if not isinstance(text, str):
            yield BadRow(where, f"text field '{src.text_field}' is {type(text).__name__}, expected a string", raw)
            continue
        title = obj.get(src.title_field) if src.title_field else None
        title = title if isinstance(title, str) else ""
        skip = {id_field, src.text_field, src.title_field}
        meta = {k: v for k, v in obj.items() if k not in skip}
        yield Record(str(obj[id_field]), title, text, where, meta)


def _iter_folder(root: Path, src: SourceConfig) -> Iterator[Record | BadRow]:
    for path in sorted(p for p in root.glob(src.glob) if p.is_file()):
        rel = str(path.relative_to(root))
        where = f"{path}"
        suffix = path.suffix.lower()
        if suffix not in TEXT_SUFFIXES | HTML_SUFFIXES:
            yield BadRow(where, f"unsupported file type '{suffix or '(none)'}' (use .txt, .md, .html)")
            continue
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadRow(where, f"invalid UTF-8 at byte {exc.start}", data[:200].decode("utf-8", "replace"))
            continue
        title = ""
        if suffix in (".md", ".markdown"):
            for line in text.splitlines():
                if line.startswith("# "):
                    title = line[2:].strip()
                    break
        yield Record(rel, title, text, where, {"path": rel}, is_html=suffix in HTML_SUFFIXES)
