"""Document texts for vocabulary work: from a stage's document shards, or straight from a source (CLI).

Both yield ``title + "\\n" + text`` per document. Reading a source reuses the ingest readers
(:func:`embedforge.data.ingest.iter_source`) and the same unicode cleaning, so ``embedforge vocab analyze`` sees the
same words as the ``analyze_vocab`` stage. Unusable rows are counted, never dropped silently; a corpus with no
usable document is a :class:`CorpusError` that names the file and the reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from embedforge.configs.ingest import SourceConfig
from embedforge.data import cleaning
from embedforge.data.ingest import BadRow, iter_source
from embedforge.data.shards import iter_batches, list_shards


class CorpusError(ValueError):
    """The corpus cannot be used (missing, empty, binary, no words), with the file and the reason."""


def document_text(title: str | None, text: str | None) -> str:
    """The text analysed for one document: title and body on separate lines."""
    return f"{title}\n{text or ''}" if title else (text or "")


def shard_texts(documents_dir: str | Path, batch_rows: int = 1024) -> Iterator[list[str]]:
    """Batches of document texts from DOCUMENTS shards (the ``ingest`` output)."""
    if not list_shards(documents_dir):
        raise CorpusError(f"no document shards in {documents_dir}")
    for batch in iter_batches(documents_dir, columns=["title", "text"], batch_rows=batch_rows):
        titles = batch.column("title").to_pylist()
        texts = batch.column("text").to_pylist()
        yield [document_text(t, x) for t, x in zip(titles, texts, strict=True)]


class SourceReader:
    """Streams cleaned document texts from one source (JSONL, Parquet, BEIR dir, folder) and counts bad rows.

    >>> reader = SourceReader("data/corpus.jsonl")
    >>> for batch in reader.batches(256): ...  # doctest: +SKIP
    >>> reader.documents, reader.bad_rows
    """

    def __init__(self, path: str, fmt: str = "auto", text_field: str = "text",
                 title_field: str | None = "title") -> None:
        self.source = SourceConfig(path=path, format=fmt, text_field=text_field, title_field=title_field)
        self.documents = 0
        self.bad_rows = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []

    def _bad(self, source: str, reason: str) -> None:
        self.bad_rows += 1
        self.reasons[reason.split(" (")[0].split(" at byte")[0]] += 1
        if len(self.examples) < 3:
            self.examples.append(f"{source}: {reason}")

    def batches(self, batch_rows: int = 1024) -> Iterator[list[str]]:
        """Batches of cleaned texts; raises :class:`CorpusError` when the source yields no usable document."""
        path = self.source.path
        batch: list[str] = []
        try:
            for item in iter_source(self.source):
                if isinstance(item, BadRow):
                    self._bad(item.source, item.reason)
                    continue
                text = item.text
                if cleaning.looks_like_html(text) or item.is_html:
                    title, text = cleaning.html_to_text(text)
                    item.title = item.title or title
                text = cleaning.normalize_text(document_text(item.title, text))
                if not text:
                    self._bad(item.source, "empty document after cleaning")
                    continue
                self.documents += 1
                batch.append(text)
                if len(batch) >= batch_rows:
                    yield batch
                    batch = []
        except (FileNotFoundError, ValueError) as exc:
            raise CorpusError(f"corpus {path}: {exc}") from exc
        except Exception as exc:  # pyarrow and friends: a file that is not what its name says
            raise CorpusError(f"corpus {path}: cannot read it as {self.source.format} "
                              f"({type(exc).__name__}: {exc}); is it a binary or corrupt file?") from exc
        if batch:
            yield batch
        if self.documents == 0:
            detail = (f"; {self.bad_rows} unusable rows ({', '.join(f'{r}: {n}' for r, n in self.reasons.items())}), "
                      f"e.g. {self.examples[0]}") if self.bad_rows else ""
            raise CorpusError(f"corpus {path}: no usable documents{detail}")
