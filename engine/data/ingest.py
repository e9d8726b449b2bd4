"""Readers for every input format, yielding documents or bad rows (never dropping silently).

Formats: JSONL (one object per line), Parquet, BEIR directories (``corpus.jsonl``), folders of
``.txt``/``.md``/``.html`` files, and one such file alone. Each record carries ``source`` = ``file:line`` (or
``file#row``) for lineage and quarantine messages. A folder's files stay inside it: a file the glob reaches
through a symbolic link pointing outside the folder is quarantined, not read.
"""

from __future__ import annotations

import json
import os
import re
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
    kind: str = ""
    """The reason without row-specific details (offsets, ids), for counting reasons (default: derived)."""
    byte_offset: int | None = None
    """Where in the row the problem is (invalid UTF-8), when known."""

    def as_quarantine(self) -> dict[str, Any]:
        row = {"source": self.source, "reason": self.reason, "kind": self.kind or reason_kind(self.reason),
               "raw": self.raw[:2000]}
        if self.byte_offset is not None:
            row["byte_offset"] = self.byte_offset
        return row


def reason_kind(reason: str) -> str:
    """``"malformed JSON: Expecting value (column 3)"`` → ``"malformed JSON"``; quoted values and numbers
    become ``…`` and ``N``, so rows with the same problem count together."""
    head = reason.split(" (")[0].split(":")[0]
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", head)).strip()


def resolve_path(path: str) -> Path:
    """``builtin:adi`` → the corpus shipped in the package; ``beir:scifact`` → the dataset cache
    (``embedforge datasets get``, :mod:`embedforge.data.datasets`); anything else as a path."""
    if path.startswith("beir:"):
        from embedforge.data.datasets import resolve_dataset

        return resolve_dataset(path)
    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        target = BUILTIN_DIR / name
        if not name or "/" in name or name.startswith(".") or not target.exists():
            known = sorted(p.name for p in BUILTIN_DIR.iterdir() if not p.name.startswith("_")) if BUILTIN_DIR.is_dir() else []
            raise FileNotFoundError(f"no built-in corpus '{name}' (built-in: {', '.join(known)})")
        return target
    return Path(path).expanduser()


def check_source(src: SourceConfig) -> Path:
    """The source's path when it can be read; else ``FileNotFoundError``/``ValueError`` saying why (not found,
    a looping or broken symbolic link, not readable, format not decidable)."""
    path = resolve_path(src.path)
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        raise FileNotFoundError(f"ingest source {src.path}: a symbolic link that loops") from None
    except OSError as exc:
        if path.is_symlink():
            why = "loops" if exc.errno == 40 else f"points to {os.readlink(path)}, which does not exist"
            raise FileNotFoundError(f"ingest source {src.path}: a symbolic link that {why}") from None
        if exc.errno == 40:
            raise FileNotFoundError(f"ingest source {src.path}: a symbolic link on the way loops") from None
        raise FileNotFoundError(f"ingest source not found: {src.path}") from None
    if not os.access(path, os.R_OK):
        raise FileNotFoundError(f"ingest source {src.path}: not readable (permissions)")
    if not (path.is_dir() or path.is_file()):  # a device, FIFO or socket would be read forever
        raise ValueError(f"ingest source {src.path}: not a regular file or directory")
    fmt = detect_format(path, src.format)
    wants_dir = fmt in ("beir", "folder")
    if wants_dir != path.is_dir():
        raise ValueError(f"ingest source {src.path}: format '{fmt}' needs a {'directory' if wants_dir else 'file'}")
    if fmt == "beir" and not (path / "corpus.jsonl").is_file():
        raise FileNotFoundError(f"ingest source {src.path}: a BEIR directory needs corpus.jsonl")
    return path


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "folder"
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix.lower() in TEXT_SUFFIXES | HTML_SUFFIXES:
        return "text"
    raise ValueError(f"{path}: cannot tell the format from the name; set 'format' (jsonl, parquet, beir, folder, text)")


def iter_source(src: SourceConfig) -> Iterator[Record | BadRow]:
    """All records of one source, in a stable order. ``source`` of a built-in corpus reads ``builtin:NAME/...``."""
    path = check_source(src)
    fmt = detect_format(path, src.format)
    if fmt == "beir":
        items = _iter_mapping_rows(_jsonl_rows(path / "corpus.jsonl"), src, id_default="_id")
    elif fmt == "jsonl":
        items = _iter_mapping_rows(_jsonl_rows(path), src)
    elif fmt == "parquet":
        items = _iter_mapping_rows(_parquet_rows(path), src)
    elif fmt == "text":
        items = _iter_files(path.parent, [path])
    else:
        items = _iter_files(path, folder_files(path, src.glob))
    if not src.path.startswith(("builtin:", "beir:")):
        yield from items
        return
    prefix = str(path)
    for item in items:
        item.source = src.path + item.source[len(prefix):] if item.source.startswith(prefix) else item.source
        yield item


def folder_files(root: Path, pattern: str) -> list[Path]:
    """Files under ``root`` matching ``pattern``, sorted. The config refuses absolute and ``..`` patterns; a
    match whose real location is outside ``root`` (a symbolic link) is kept here and quarantined when read."""
    return sorted(p for p in root.glob(pattern) if p.is_file())


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _source_files(path: Path, src: SourceConfig) -> list[Path]:
    fmt = detect_format(path, src.format)
    if fmt == "beir":
        return [path / "corpus.jsonl"]
    if fmt == "folder":
        return [p for p in folder_files(path, src.glob) if _inside(p, path)]
    return [path]


def source_fingerprint(src: SourceConfig) -> str:
    """Content fingerprint of a source: relative names and a hash of every byte of each file
    (:mod:`embedforge.data.fingerprint`). A source that cannot be read yet fingerprints as ``missing:…``
    (:func:`check_source` reports why before any stage runs)."""
    from embedforge.data.fingerprint import files_fingerprint

    try:
        path = check_source(src)
        files = _source_files(path, src)
        return files_fingerprint((str(f.relative_to(path)) if path.is_dir() else f.name, f) for f in files)
    except (OSError, ValueError):
        return f"missing:{src.path}"


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadRow]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, BadRow(where, f"invalid UTF-8 at byte {exc.start}", raw[:200].decode("utf-8", "replace"),
                                    kind="invalid UTF-8", byte_offset=exc.start)
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
        title = obj.get(src.title_field) if src.title_field else None
        title = title if isinstance(title, str) else ""
        if text is None and not title:
            yield BadRow(where, f"missing text field '{src.text_field}' (and no title)", raw)
            continue
        if text is not None and not isinstance(text, str):
            yield BadRow(where, f"text field '{src.text_field}' is {type(text).__name__}, expected a string", raw)
            continue
        text = text or ""  # a title-only record is a document: its content is its title
        skip = {id_field, src.text_field, src.title_field}
        meta = {k: v for k, v in obj.items() if k not in skip}
        yield Record(str(obj[id_field]), title, text, where, meta)


def _iter_files(root: Path, files: list[Path]) -> Iterator[Record | BadRow]:
    for path in files:
        rel = str(path.relative_to(root))
        where = f"{path}"
        suffix = path.suffix.lower()
        if not _inside(path, root):
            yield BadRow(where, f"outside the source folder (a link to {path.resolve()}); not read")
            continue
        if suffix not in TEXT_SUFFIXES | HTML_SUFFIXES:
            yield BadRow(where, f"unsupported file type '{suffix or '(none)'}' (use .txt, .md, .html)")
            continue
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadRow(where, f"invalid UTF-8 at byte {exc.start}", data[:200].decode("utf-8", "replace"),
                         kind="invalid UTF-8", byte_offset=exc.start)
            continue
        title = ""
        if suffix in (".md", ".markdown"):
            for line in text.splitlines():
                if line.startswith("# "):
                    title = line[2:].strip()
                    break
        yield Record(rel, title, text, where, {"path": rel}, is_html=suffix in HTML_SUFFIXES)
