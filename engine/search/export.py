"""FAISS index export of embedding shards: flat / HNSW / IVF-PQ per dimension, with an id map.

An exported index is a directory ``<root>/d<dim>-<kind>/`` holding ``index.faiss``, ``ids.parquet``
(row → ``id``, ``chunk_id``, ``doc_version``, ``text`` when the embed output kept texts) and ``meta.json`` (model id and path,
encoder variant, dim, kind, rows, parameters). Vectors are L2-normalized, so inner product is cosine.
Shards are added one at a time (IVF-PQ trains on a bounded sample first), so memory is the index itself.

Beside them, ``<root>/bm25/`` (``index.bm25: true``) holds a BM25 index of the same passages (full texts, bm25s
files, ``ids.parquet``, ``meta.json``), so :func:`hybrid_search` can fuse dense and lexical results.

Building and querying these ANN structures is what this module is for; exact search elsewhere goes through
:func:`embedforge.search.index.search`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedforge import device as dev
from embedforge.data.shards import atomic_write_json, iter_shards, list_shards
from embedforge.search import faiss_indexes

KINDS = ("flat", "hnsw", "ivfpq")


def _vectors(table: pa.Table) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    return np.ascontiguousarray(column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim), dtype=np.float32)


def build_index(shards_dir: Path, kind: str, *, hnsw_m: int = 32, nlist: int | None = None,
                pq_m: int | None = None, train_rows: int = 100_000) -> tuple[Any, dict[str, Any]]:
    """A FAISS inner-product index over every shard of ``shards_dir`` (one embeddings dataset, one dim)."""
    shards = list_shards(shards_dir)
    if not shards:
        raise FileNotFoundError(f"no embedding shards in {shards_dir}")
    dim = pq.read_schema(shards[0]).field("vector").type.list_size
    n = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
    if kind not in KINDS:
        raise ValueError(f"unknown index kind '{kind}' (expected one of {', '.join(KINDS)})")
    index, params = faiss_indexes.new_index(kind, dim, n, hnsw_m=hnsw_m, nlist=nlist, pq_m=pq_m)
    sample = None
    if not index.is_trained:  # IVF-PQ: trained on the first ``train_rows`` vectors
        parts, have = [], 0
        for _, table in iter_shards(shards_dir, columns=["vector"]):
            parts.append(_vectors(table)[: train_rows - have])
            have += len(parts[-1])
            if have >= train_rows:
                break
        sample = np.concatenate(parts)
        params["trained_on"] = have
    blocks = (_vectors(table) for _, table in iter_shards(shards_dir, columns=["vector"]))
    faiss_indexes.fill(index, blocks, sample)
    return index, {"dim": dim, "rows": int(index.ntotal), "params": params}


def export_index(embed_dir: Path, shards_dir: Path, out: Path, kind: str, meta: dict[str, Any],
                 **options: Any) -> Path:
    """Build one index of ``shards_dir`` and write it with its id map and metadata to ``out``."""
    faiss = dev.optional_import("faiss", "index export")
    index, info = build_index(shards_dir, kind, **options)
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    tmp_ids = out / ".ids.parquet.tmp"
    for name, table in iter_shards(shards_dir, columns=["id", "chunk_id", "doc_version"]):
        part = table.append_column("text", _texts(embed_dir / "texts" / name, table.num_rows))
        writer = writer or pq.ParquetWriter(tmp_ids, part.schema, compression="zstd")
        writer.write_table(part)
    if writer is not None:
        writer.close()
    tmp_index = out / ".index.faiss.tmp"
    faiss.write_index(index, str(tmp_index))
    tmp_index.replace(out / "index.faiss")
    tmp_ids.replace(out / "ids.parquet")
    full = {**meta, **info, "kind": kind, "metric": "inner_product (cosine on normalized vectors)"}
    if full.get("model_path") and Path(full["model_path"]).exists():  # relative: the run dir can move or be copied
        full["model_path"] = os.path.relpath(Path(full["model_path"]).resolve(), out.resolve())
    atomic_write_json(out / "meta.json", full)
    return out


def _texts(path: Path, rows: int) -> pa.Array:
    """The text snippets of one shard (same rows, same order as its embeddings), or nulls when not kept."""
    if not path.is_file():
        return pa.nulls(rows, pa.string())
    return pq.read_table(path, columns=["text"]).column("text").combine_chunks()


@dataclass
class LoadedIndex:
    """An exported index ready to query."""

    path: Path
    index: Any
    ids: pa.Table
    meta: dict[str, Any]

    def search(self, queries: np.ndarray, k: int, ef_search: int = 64, nprobe: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of the top ``k`` (rows index :attr:`ids`; −1 when fewer results)."""
        faiss = dev.optional_import("faiss", "index search")
        if self.meta["kind"] == "hnsw":
            self.index.hnsw.efSearch = max(ef_search, k)
        elif self.meta["kind"] == "ivfpq":
            faiss.extract_index_ivf(self.index).nprobe = nprobe
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.index.ntotal))
        return scores, rows

    def documents(self) -> np.ndarray:
        """The document of each row (an integer per distinct ``doc_version``: a chunk's document, or the record
        itself), for one result per document (:mod:`embedforge.search.passages`)."""
        if "doc_version" not in self.ids.column_names:
            raise ValueError(f"{self.path}: this index has no document versions (exported by an older embedforge); "
                             "re-export it with embed --index to search one result per document")
        return np.unique(np.asarray(self.ids.column("doc_version").to_pylist(), dtype=object),
                         return_inverse=True)[1].reshape(-1)


def find_indexes(root: Path) -> list[Path]:
    """Index directories under ``root`` (itself when it holds ``meta.json``), largest dim then flat first."""
    root = Path(root)
    if (root / "meta.json").is_file() and (root / "index.faiss").is_file():
        return [root]
    found = [p.parent for p in root.rglob("meta.json") if (p.parent / "index.faiss").is_file()]

    def order(p: Path) -> tuple[int, int]:
        meta = json.loads((p / "meta.json").read_text())
        return -int(meta["dim"]), KINDS.index(meta["kind"]) if meta["kind"] in KINDS else 9
    return sorted(found, key=order)


def load_index(path: Path) -> LoadedIndex:
    """Load an exported index directory."""
    faiss = dev.optional_import("faiss", "index search")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("model_path") and not Path(meta["model_path"]).is_absolute():  # stored relative to the index dir
        meta["model_path"] = os.path.normpath(path / meta["model_path"])
    return LoadedIndex(path, faiss.read_index(str(path / "index.faiss")), pq.read_table(path / "ids.parquet"), meta)


BM25_DIR = "bm25"
"""Directory of the BM25 index beside the FAISS index directories."""


def export_bm25(blocks: Iterable[Any], out: Path, meta: dict[str, Any], *,
                stemmer: str | None) -> Path:
    """A BM25 index of the usable rows of ``blocks`` (:func:`embedforge.encoding.bulk_embed.iter_blocks`, the same
    stream the embeddings came from), its words reduced by the Snowball ``stemmer``, written to a temp directory
    and renamed into ``out``."""
    from embedforge.search.bm25 import BM25Retriever

    ids: list[str] = []
    texts: list[str] = []
    for block in blocks:
        ids += block.ids
        texts += block.texts
    if not texts:
        raise ValueError(f"no usable rows to build the BM25 index {out} from")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bm = BM25Retriever(texts, stemmer=stemmer)
    bm.save(tmp / "index")
    pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), tmp / "ids.parquet")
    atomic_write_json(tmp / "meta.json", {**meta, "kind": "bm25", "rows": len(ids), "index_bytes": bm.index_bytes,
                                          "k1": bm.model.k1, "b": bm.model.b, "stopwords": bm.stopwords,
                                          "token_pattern": bm.token_pattern, "stemmer": bm.stemmer})
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def find_bm25(root: Path) -> Path | None:
    """The BM25 index for the FAISS index(es) at ``root``: ``root/bm25``, a sibling ``../bm25``, or one below."""
    root = Path(root)
    for path in (root / BM25_DIR, root.parent / BM25_DIR, *root.rglob(BM25_DIR)):
        if (path / "meta.json").is_file() and (path / "ids.parquet").is_file():
            return path
    return None


def hybrid_search(loaded: LoadedIndex, bm25_dir: Path, query_vectors: np.ndarray, query_texts: list[str], k: int,
                  fusion: str = "zscore", depth: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Dense top ``depth`` fused with BM25's top ``depth`` (:mod:`embedforge.search.fusion`); ``(scores, rows)``
    with rows of ``loaded``'s id map (BM25 results are matched to them by id)."""
    from embedforge.search.bm25 import BM25Retriever
    from embedforge.search.fusion import reciprocal_rank_fusion, zscore_fusion

    depth = max(depth, k)
    d_scores, d_rows = loaded.search(query_vectors, depth)
    d_rows = d_rows.astype(np.int64)
    bm = BM25Retriever.load(bm25_dir / "index")
    b_scores, b_rows = bm.search(query_texts, depth)
    row_of = {v: i for i, v in enumerate(loaded.ids.column("id").to_pylist())}
    bm_ids = pq.read_table(bm25_dir / "ids.parquet").column("id").to_pylist()
    mapped = np.array([[row_of.get(bm_ids[r], -1) if s > 0 else -1 for s, r in zip(srow, rrow, strict=True)]
                       for srow, rrow in zip(b_scores, b_rows, strict=True)], dtype=np.int64).reshape(b_rows.shape)
    if fusion == "rrf":
        return reciprocal_rank_fusion([d_rows, mapped], k)
    if fusion == "zscore":
        return zscore_fusion([(d_scores, d_rows), (b_scores, mapped)], k)
    raise ValueError(f"unknown fusion '{fusion}' (rrf or zscore)")
