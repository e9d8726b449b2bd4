"""Config of the ``ingest`` stage: where documents come from and how they are cleaned."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from embedforge.configs.base import StageConfig, no_hash


class SourceConfig(StageConfig):
    """One input: a JSONL or Parquet file, a BEIR directory, a folder of .txt/.md/.html files, or one such file."""

    path: str
    """File or directory; relative paths are taken from the working directory; ``builtin:NAME`` is a corpus shipped with embedforge; ``beir:NAME`` a dataset fetched by ``embedforge datasets get NAME``."""
    format: Literal["auto", "jsonl", "parquet", "beir", "folder", "text"] = "auto"
    """Input format; ``auto`` decides from the path (directory with corpus.jsonl → beir, other directory → folder,
    a .txt/.md/.html file → text: the file is one document)."""
    id_field: str = "auto"
    """Field holding the document id (``auto``: ``_id``, then ``id``, then ``doc_id``; folders use the relative path)."""
    text_field: str = "text"
    """Field holding the document text."""
    title_field: str | None = "title"
    """Field holding the title, or null when there is none."""
    glob: str = "**/*"
    """For folders: which files to read (.txt, .md, .markdown, .html, .htm are used; others are quarantined).
    Relative to the folder and staying inside it: no absolute pattern, no ``..``."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError("a source path must be a non-empty path without NUL characters")
        return value

    @field_validator("glob")
    @classmethod
    def _glob(cls, value: str) -> str:
        from pathlib import Path, PurePosixPath, PureWindowsPath

        if not value.strip() or "\x00" in value:
            raise ValueError("glob must be a non-empty pattern relative to the folder, like **/*.txt")
        if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or value.startswith("~"):
            raise ValueError(f"glob '{value}' is absolute; give a pattern relative to the folder, like **/*.txt")
        if ".." in PurePosixPath(value.replace("\\", "/")).parts:
            raise ValueError(f"glob '{value}' leaves the folder ('..'); a glob selects files inside the folder only")
        try:  # pathlib refuses some patterns only when it globs ('.', './'): find out now
            list(Path("/nonexistent-embedforge-glob-probe").glob(value))
        except (ValueError, IndexError, AttributeError, NotImplementedError):
            raise ValueError(f"glob '{value}' is not a file pattern pathlib can use (like **/*.txt)") from None
        return value


class IngestConfig(StageConfig):
    """Read documents, clean them, give each an exact version (content hash), write document shards."""

    sources: list[SourceConfig] = Field(default_factory=list)
    """Inputs, read in order; at least one."""
    normalize_unicode: bool = True
    """NFKC unicode normalization and whitespace folding (paragraph breaks are kept)."""
    strip_html: bool = True
    """Reduce HTML (in .html files and in text fields that look like HTML) to text, dropping boilerplate."""
    redact_pii: bool = False
    """Replace emails, phone numbers, Luhn-valid card numbers and valid IBANs with placeholders."""
    dedup: bool = True
    """Remove exact duplicates (same cleaned title + text); counted in the manifest."""
    min_chars: int = Field(1, ge=0)
    """Documents shorter than this after cleaning are quarantined as empty."""
    max_chars: int = Field(2_000_000, gt=0)
    """Documents longer than this are quarantined as oversized."""
    max_bad_share: float = Field(0.01, ge=0.0, le=1.0)
    """The stage fails when more than this share of input rows is quarantined."""
    shard_rows: int = Field(10_000, gt=0)
    """Documents per output shard."""
    progress_every: int = no_hash(1000)
    """Rows between progress updates."""

    def input_fingerprint(self) -> list[str]:
        """Content hash of every byte of every source file, so any change to a corpus re-runs ingest (paths not
        included, so the same data on a cluster node and locally hash alike)."""
        from embedforge.data.ingest import source_fingerprint

        return [source_fingerprint(src) for src in self.sources]

    @model_validator(mode="after")
    def _needs_source(self) -> IngestConfig:
        if not self.sources:
            raise ValueError("ingest needs at least one entry in 'sources' (e.g. - path: data/corpus.jsonl)")
        return self
