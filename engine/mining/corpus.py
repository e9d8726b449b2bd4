"""What hard-negative mining needs besides the index: the chunk corpus, known positives, corpus vectors on disk.

- :class:`MiningCorpus`: chunk ids, passage texts (``passage_text(title, text)``, what the model embeds),
  document codes and normalized-text hashes, all corpus-sized and independent of the number of queries;
- :class:`KnownPositives`: every (query key → chunk row) pair as two sorted int64 arrays (16 bytes per query
  row), so "all positives of this query text / query id" is a vectorized lookup;
- :func:`corpus_vectors`: the corpus embedded once into a memory-mapped ``.npy`` in the stage directory,
  block by block, with a progress file: a killed run resumes after the last finished block, and a finished file
  is reused as long as its model, dimension and chunk ids match.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from embedforge.data.schemas import passage_text
from embedforge.data.shards import atomic_write_json, list_shards, read_table
from embedforge.mining.negatives import CorpusKeys

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """NFKC, case-folded, punctuation and whitespace runs folded to one space (for equality tests)."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text or "").casefold()).strip()


def stable_key(text: str) -> int:
    """A process-independent signed 64-bit hash of ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def stable_keys(texts: Iterable[str], prefix: str = "") -> np.ndarray:
    """:func:`stable_key` of each ``prefix + text`` as int64."""
    return np.fromiter((stable_key(prefix + t) for t in texts), dtype=np.int64)


@dataclass
class MiningCorpus:
    """The chunk corpus, in shard order (row i of the vectors is chunk i)."""

    chunk_ids: pa.Array
    texts: pa.Array
    """Passage texts as embedded: ``title + " " + text``."""
    keys: CorpusKeys
    row_of: dict[str, int]
    fingerprint: str
    """Hash of the chunk ids in order (ties a vectors file to this corpus)."""

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def rows(self, chunk_ids: Sequence[str]) -> np.ndarray:
        """Corpus rows of ``chunk_ids`` (-1 for unknown ids)."""
        return np.fromiter((self.row_of.get(c, -1) for c in chunk_ids), dtype=np.int64, count=len(chunk_ids))

    def take_texts(self, rows: np.ndarray) -> list[str]:
        return self.texts.take(pa.array(rows, type=pa.int64())).to_pylist()

    def take_ids(self, rows: np.ndarray) -> list[str]:
        return self.chunk_ids.take(pa.array(rows, type=pa.int64())).to_pylist()


def load_mining_corpus(chunk_dir: Path) -> MiningCorpus:
    """Read CHUNKS shards (``chunk_id, doc_id, title, text``) into a :class:`MiningCorpus`."""
    if not list_shards(chunk_dir):
        raise ValueError(f"no chunk shards in {chunk_dir}: the corpus to mine negatives from is empty")
    table = read_table(chunk_dir, columns=["chunk_id", "doc_id", "title", "text"])
    if table.num_rows == 0:
        raise ValueError(f"the chunk shards in {chunk_dir} have no rows: the corpus to mine negatives from is empty")
    chunk_ids = table.column("chunk_id").combine_chunks()
    ids = chunk_ids.to_pylist()
    row_of = {c: i for i, c in enumerate(ids)}
    if len(row_of) != len(ids):
        dup = next(c for i, c in enumerate(ids) if row_of[c] != i)
        raise ValueError(f"{chunk_dir}: chunk_id '{dup}' occurs more than once")
    texts = [passage_text(t, x) for t, x in zip(table.column("title").to_pylist(), table.column("text").to_pylist(),
                                                 strict=True)]
    doc_codes = pc.dictionary_encode(table.column("doc_id").combine_chunks()).indices.to_numpy().astype(np.int64)
    keys = CorpusKeys(doc_codes=doc_codes, text_hashes=stable_keys(normalize_text(t) for t in texts))
    fingerprint = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return MiningCorpus(chunk_ids, pa.array(texts, type=pa.large_string()), keys, row_of, fingerprint)


class KnownPositives:
    """Query key → corpus rows, for "every known positive of this query".

    >>> known = KnownPositives.from_pairs(np.array([7, 7, 9]), np.array([0, 3, 5]))
    >>> known.lookup(np.array([7, 9]))
    array([[ 0,  3], [ 5, -1]])
    """

    def __init__(self, keys: np.ndarray, rows: np.ndarray) -> None:
        self.keys = keys
        self.rows = rows

    @classmethod
    def from_pairs(cls, keys: np.ndarray, rows: np.ndarray) -> KnownPositives:
        keep = rows >= 0
        keys, rows = keys[keep], rows[keep]
        order = np.lexsort((rows, keys))
        keys, rows = keys[order], rows[order]
        if len(keys):  # drop repeated pairs
            first = np.ones(len(keys), dtype=bool)
            first[1:] = (keys[1:] != keys[:-1]) | (rows[1:] != rows[:-1])
            keys, rows = keys[first], rows[first]
        return cls(keys, rows)

    def lookup(self, keys: np.ndarray, *more: np.ndarray) -> np.ndarray:
        """Rows for each key ``(q, p)`` padded with -1; extra key arrays add their rows (union, deduplicated)."""
        parts = [self._lookup(k) for k in (keys, *more)]
        out = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if len(parts) > 1 and out.shape[1] > 1:  # dedupe: sort desc, blank repeats, sort again
            out = -np.sort(-out, axis=1)
            rep = np.zeros(out.shape, dtype=bool)
            rep[:, 1:] = (out[:, 1:] == out[:, :-1]) & (out[:, 1:] >= 0)
            out[rep] = -1
            out = -np.sort(-out, axis=1)
            out = out[:, : max(1, int((out >= 0).sum(axis=1).max(initial=0)))]
        return out

    def _lookup(self, keys: np.ndarray) -> np.ndarray:
        left = np.searchsorted(self.keys, keys, side="left")
        counts = np.searchsorted(self.keys, keys, side="right") - left
        width = max(1, int(counts.max(initial=0)))
        out = np.full((len(keys), width), -1, dtype=np.int64)
        for j in range(width):
            sel = counts > j
            out[sel, j] = self.rows[left[sel] + j]
        return out


def corpus_vectors(path: Path, corpus: MiningCorpus, encode: Callable[[list[str]], np.ndarray], model_id: str, dim: int,
                   block: int = 8192) -> np.ndarray:
    """The corpus embedded into ``path`` (float32 ``.npy``, memory-mapped), resuming after the last finished block.

    ``encode(texts) -> float32 (n, dim)``. ``<path>.json`` records the model, dimension, corpus fingerprint and the
    rows done; it is rewritten (atomically) after each block is flushed, so it never claims unwritten rows.
    """
    meta_path = path.with_suffix(".json")
    want = {"model_id": model_id, "dim": dim, "rows": len(corpus), "corpus": corpus.fingerprint}
    state = json.loads(meta_path.read_text()) if meta_path.is_file() and path.is_file() else {}
    if {k: state.get(k) for k in want} == want:
        vectors = np.lib.format.open_memmap(path, mode="r+")
        done = int(state.get("rows_done", 0))
    else:
        vectors = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(corpus), dim))
        done = 0
    for start in range(done, len(corpus), block):
        rows = np.arange(start, min(start + block, len(corpus)))
        out = encode(corpus.take_texts(rows))
        if out.shape != (len(rows), dim):
            raise ValueError(f"the encoder returned shape {out.shape} for {len(rows)} passages, expected dim {dim}")
        vectors[start:start + len(rows)] = out
        vectors.flush()
        atomic_write_json(meta_path, {**want, "rows_done": int(rows[-1]) + 1})
    del vectors
    return np.load(path, mmap_mode="r")
