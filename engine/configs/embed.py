"""Config of the ``embed`` stage: embed the job's chunks (or any corpus) and export FAISS indexes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, Field, field_validator

from embedforge.configs.base import StageConfig, no_hash
from embedforge.search.bm25 import STEMMER, check_stemmer


class IndexConfig(StageConfig):
    """Which FAISS indexes to export from the embeddings, one per kind and dimension."""

    kinds: list[Literal["flat", "hnsw", "ivfpq"]] = Field(default_factory=lambda: ["flat"])
    """Index kinds: ``flat`` (exact), ``hnsw`` (graph), ``ivfpq`` (compressed, for very large corpora)."""
    bm25: bool = False
    """Also export a BM25 index of the same passages (``index/bm25``), for ``embedforge search --hybrid``."""
    bm25_stemmer: Annotated[str | None, AfterValidator(check_stemmer)] = STEMMER
    """Snowball stemmer of the BM25 index's words (a PyStemmer language; null: no stemming). Queries are stemmed
    the same way at search time (the index records it)."""
    hnsw_m: int = Field(32, ge=4)
    """HNSW neighbours per node."""
    ivf_nlist: int | None = None
    """IVF lists (null: ~4·√rows, at least 39 training points per list)."""
    pq_m: int | None = None
    """PQ sub-quantizers, must divide the dimension (null: dim/8)."""


class EmbedConfig(StageConfig):
    """Embed passages with a model into Parquet embedding shards (one dataset per Matryoshka dim)."""

    model: str = "auto"
    """Model: ``auto`` (the job's trained model when it has a train stage, else ``base``), ``base``, ``train``,
    a packaged name or a path."""
    input: str = "chunk"
    """``chunk`` (this job's chunks) or a path: JSONL, Parquet shards, or a BEIR directory."""
    format: Literal["auto", "chunks", "parquet", "jsonl", "beir"] = "auto"
    """Input format (``auto`` tells from the path)."""
    id_field: str | None = None
    """Column/key holding the row id (null: chunk_id for chunks, else the first of id, _id, chunk_id, doc_id)."""
    dims: list[int] = Field(default_factory=list)
    """Matryoshka dimensions to write (truncated and re-normalized); empty: the model's full dimension."""
    vector_dtype: Literal["float32", "float16"] = "float32"
    """Storage type of the ``vector`` column."""
    int8: bool = False
    """Also write an ``int8`` column with a per-row ``scale`` (symmetric, max-abs)."""
    binary: bool = False
    """Also write a sign-packed ``binary`` column (dim/8 bytes)."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", validation_alias=AliasChoices("precision", "dtype"))
    """Model compute precision (``dtype:`` is accepted too, as the other stages spell it; ``auto``: bf16/fp16 on
    CUDA, fp32 on CPU)."""
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    """Encoder backend (``auto``: ONNX Runtime for fp32 on CPU, torch otherwise; ``onnx-int8`` is lossy)."""
    shard_rows: int = Field(20000, ge=1)
    """Most input rows per output shard (memory holds one shard)."""
    keep_text: bool = True
    """Keep id → the exact text that was embedded (title and body as encoded) next to the embeddings, so search
    results show it and the vectors can be rebuilt from the output alone."""
    executor: Literal["local", "ray"] = "local"
    """``local`` (this process) or ``ray`` (Ray Data actor pool sized from the cluster); both resumable per shard,
    with the same shards, so either resumes the other's run."""
    index: IndexConfig | None = Field(default_factory=IndexConfig)
    """Index export (null: none)."""
    max_batch_tokens: int = no_hash(16384)
    """Token budget per model batch (padded tokens)."""
    cache: bool = no_hash(True)
    """Use the embedding cache (``$EMBEDFORGE_CACHE``): texts already embedded by this model are not re-encoded."""
    ray_actors: int | None = no_hash(None)
    """Ray: most encoder actors in the autoscaling pool (null: one per GPU, or as many CPU actors of up to 4
    CPUs as fit beside ``ray_io_cpus``)."""
    ray_cpus_per_actor: float | None = no_hash(None)
    """Ray: CPUs each encoder actor reserves (null: an even share, at most 4); its torch threads are that share
    plus, on CPU clusters, its part of ``ray_io_cpus``."""
    ray_io_cpus: float = no_hash(1.0, gt=0)
    """Ray: CPUs kept free for the read tasks (capped at half the cluster), so the actors can never starve them
    (a reservation: CPU actors' threads also run on them between reads)."""
    ray_batch_rows: int = no_hash(512, ge=1)
    """Ray: rows per ``map_batches`` call."""
    ray_stall_timeout_s: float = no_hash(600.0, gt=0)
    """Ray: fail the stage when no batch comes back for this many seconds (includes actor start-up)."""
    ray_window_rows: int | None = no_hash(None, ge=1)
    """Ray: send the input files through Ray in windows of about this many rows (whole files), one Ray Dataset
    each (null: one Dataset). Ray Data keeps statistics for every block of a Dataset until the Dataset ends, so
    a very long run through one driver grows its memory with the input; windows bound that, at the cost of
    starting the actor pool again per window (model loads: ~16 s per window on 2 CPU cores)."""

    def input_fingerprint(self) -> str | None:
        """Content hash of a path ``input`` (every file), so edited input re-runs embed; None for ``chunk``."""
        from embedforge.data.fingerprint import path_fingerprint

        return None if self.input == "chunk" else path_fingerprint(self.input)

    @field_validator("dims")
    @classmethod
    def _check_dims(cls, value: list[int]) -> list[int]:
        if any(d <= 0 for d in value) or len(set(value)) != len(value):
            raise ValueError(f"dims must be distinct positive integers, got {value}")
        return value
