"""Embedding cache keyed by (model id, text hash, dim): a text is never encoded twice by the same encoder.

Storage: one SQLite file per namespace under ``$EMBEDFORGE_CACHE/embeddings/`` (default
``~/.cache/embedforge``). A namespace is ``<model_id>-<variant>-d<dim>``: the model's content hash, the
numeric variant that produced the vectors (``torch-fp32``, ``onnx-fp32``, ``torch-bf16``, ``onnx-int8`` — a
bf16 vector is not an fp32 vector) and the dimension stored. The encoder stores full-dimension vectors; a
Matryoshka dimension is their exact truncation + re-normalization, so one entry serves every dim.

Rows are ``(key = blake2b-128 of the UTF-8 text, vector bytes)`` in a ``WITHOUT ROWID`` table; writes are
SQLite transactions (WAL, so readers never see a partial write and a killed writer loses only its open
transaction); lookups go in chunks of 500 keys, so memory is bounded by the caller's batch, never by the cache.
Safe across threads (one lock per connection) and processes (SQLite locking; connections are per process).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_CHUNK = 500


def text_key(text: str) -> bytes:
    """The cache key of a text: 16-byte blake2b of its UTF-8 bytes."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def default_root() -> Path:
    """``$EMBEDFORGE_CACHE`` or ``~/.cache/embedforge``."""
    return Path(os.environ.get("EMBEDFORGE_CACHE") or "~/.cache/embedforge").expanduser()


class EmbeddingCache:
    """On-disk vectors by (namespace, text).

    >>> cache = EmbeddingCache()
    >>> vectors, found = cache.get("3f2a…-onnx-fp32", 384, texts)
    >>> cache.put("3f2a…-onnx-fp32", 384, [t for t, f in zip(texts, found) if not f], new_vectors)
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = (Path(root).expanduser() if root else default_root()) / "embeddings"
        self._conns: dict[tuple[str, int], tuple[sqlite3.Connection, threading.Lock]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def path(self, namespace: str, dim: int) -> Path:
        return self.root / f"{namespace}-d{dim}.sqlite"

    def _conn(self, namespace: str, dim: int) -> tuple[sqlite3.Connection, threading.Lock]:
        key = (f"{namespace}-d{dim}", os.getpid())  # a forked child opens its own connection
        with self._lock:
            if key not in self._conns:
                self.root.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path(namespace, dim), timeout=60, check_same_thread=False,
                                       isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL) "
                             "WITHOUT ROWID")
                self._conns[key] = (conn, threading.Lock())
            return self._conns[key]

    def get(self, namespace: str, dim: int, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors float32 (n, dim), found bool (n,))``; rows not found are zeros."""
        out = np.zeros((len(texts), dim), dtype=np.float32)
        found = np.zeros(len(texts), dtype=bool)
        if not texts:
            return out, found
        keys = [text_key(t) for t in texts]
        where: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        conn, lock = self._conn(namespace, dim)
        unique = list(where)
        with lock:
            for start in range(0, len(unique), _CHUNK):
                part = unique[start:start + _CHUNK]
                marks = ",".join("?" * len(part))
                for key, blob in conn.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", part):
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape[0] != dim:
                        continue  # a foreign/corrupt entry is a miss, never a wrong vector
                    for i in where[bytes(key)]:
                        out[i] = vec
                        found[i] = True
        self.hits += int(found.sum())
        self.misses += int((~found).sum())
        return out, found

    def put(self, namespace: str, dim: int, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors`` (n, dim) for ``texts`` in one transaction (existing keys are kept)."""
        if len(texts) != vectors.shape[0] or (len(texts) and vectors.shape[1] != dim):
            raise ValueError(f"cache.put: {len(texts)} texts but vectors of shape {vectors.shape} (dim {dim})")
        if not texts:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [(text_key(t), vectors[i].tobytes()) for i, t in enumerate(texts)]
        conn, lock = self._conn(namespace, dim)
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO vectors (key, vec) VALUES (?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def count(self, namespace: str, dim: int) -> int:
        """Entries stored in a namespace."""
        conn, lock = self._conn(namespace, dim)
        with lock:
            return int(conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn, _ in self._conns.values():
                conn.close()
            self._conns.clear()


_SHARED: dict[str, EmbeddingCache] = {}


def shared_cache(root: str | Path | None = None) -> EmbeddingCache:
    """A process-wide :class:`EmbeddingCache` per root (default root from ``$EMBEDFORGE_CACHE``)."""
    key = str(Path(root).expanduser() if root else default_root())
    if key not in _SHARED:
        _SHARED[key] = EmbeddingCache(root)
    return _SHARED[key]
