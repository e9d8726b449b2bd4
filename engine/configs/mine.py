"""Config of the ``mine`` stage: hard negatives for (query, positive chunk) pairs, searched with the base model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from embedforge.configs.base import StageConfig, no_hash


class MineConfig(StageConfig):
    """Find hard negatives: chunks that score high for a query but are not (known to be) relevant to it."""

    model: str = "base"
    """Model that embeds queries and chunks: ``base`` (the job's base model), a packaged name or a local path."""
    dtype: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Encoder precision (``auto``: bf16/fp16 on GPU, fp32 on CPU)."""
    queries_path: str | None = None
    """QUERIES shards (a stage dir, shards dir or .parquet file) to mine for when the job has no ``generate`` stage."""
    splits: list[str] = Field(default_factory=lambda: ["train"])
    """Query splits to mine; rows of other splits (``val``) are left out of the triples and counted."""
    num_negatives: int = Field(5, ge=1)
    """Negatives per query."""
    range_min: int = Field(0, ge=0)
    """Skip this many of the best-ranked non-positive chunks (likely unlabeled positives)."""
    range_max: int = Field(50, ge=1)
    """Only chunks ranked below this (among non-positives) are candidates."""
    sampling: Literal["top", "random"] = "top"
    """``top``: the best-scoring candidates that pass the rules; ``random``: a seeded sample of them."""
    relative_margin: float | None = Field(0.05, ge=0, lt=1)
    """A negative must score below ``positive - |positive| * relative_margin`` (0.05: below 95%); null: off."""
    absolute_margin: float | None = Field(None, ge=0)
    """A negative must score at least this much below the positive; null: off."""
    max_score: float | None = None
    """Candidates scoring above this are not negatives; null: off."""
    min_score: float | None = None
    """Candidates scoring below this are too easy to be negatives; null: off."""
    exclude_same_doc: bool = True
    """Never take a chunk of the positive's document as a negative."""
    exclude_equal_text: bool = True
    """Never take a chunk whose normalized text equals a positive's, nor two chunks with the same normalized text."""
    too_few_negatives: Literal["keep", "quarantine"] = "keep"
    """Queries that get fewer than ``num_negatives``: ``keep`` them with fewer, or ``quarantine`` them (counted)."""
    cross_encoder: str | None = None
    """Local path of a sentence-transformers CrossEncoder that rescores candidates and positives; null: off."""
    index: Literal["flat", "ivf", "auto"] = "flat"
    """Corpus index: exact ``flat``, approximate ``ivf`` (candidates only; scores stay exact), ``auto`` (ivf from
    ``ivf_min_corpus`` chunks)."""
    ivf_min_corpus: int = Field(1_000_000, ge=1)
    """With ``index: auto``, corpora of at least this many chunks use IVF."""
    ivf_nlist: int | None = Field(None, ge=1)
    """IVF lists (null: ~4·sqrt(chunks))."""
    ivf_nprobe: int = Field(32, ge=1)
    """IVF lists probed per query."""
    backend: Literal["auto", "faiss", "torch"] = no_hash("auto")
    """Search backend (results are identical): faiss (GPU when present), torch, or auto (faiss when installed)."""
    query_block: int = no_hash(4096, ge=1)
    """Queries embedded and searched per block (memory grows with it, not with the number of queries)."""
    encode_block: int = no_hash(8192, ge=1)
    """Chunks embedded per block of the memory-mapped corpus vectors (resume granularity)."""
    cache: bool = no_hash(True)
    """Use the embedding cache (``$EMBEDFORGE_CACHE``) for chunks and queries: texts this model already embedded
    (in embed, evaluate or an earlier mine run) are not re-encoded."""
    cross_encoder_batch_size: int = no_hash(64, ge=1)
    """Pairs per cross-encoder batch."""
    plot: bool = no_hash(True)
    """Write ``mine_scores.png`` next to the manifest."""

    def input_fingerprint(self) -> list[str] | None:
        """Content hashes of ``queries_path`` and a local ``cross_encoder``, so editing either re-runs mine."""
        from embedforge.data.fingerprint import path_fingerprint

        paths = [p for p in (self.queries_path, self.cross_encoder) if p]
        return [path_fingerprint(p) for p in paths] or None

    @model_validator(mode="after")
    def _check(self) -> MineConfig:
        if self.range_min >= self.range_max:
            raise ValueError(f"range_min ({self.range_min}) must be below range_max ({self.range_max})")
        if self.num_negatives > self.range_max - self.range_min:
            raise ValueError(f"num_negatives ({self.num_negatives}) does not fit in the rank window "
                             f"[range_min, range_max) = [{self.range_min}, {self.range_max})")
        if self.min_score is not None and self.max_score is not None and self.min_score >= self.max_score:
            raise ValueError(f"min_score ({self.min_score}) must be below max_score ({self.max_score})")
        if not self.splits:
            raise ValueError("splits must name at least one query split (e.g. [train])")
        if self.cross_encoder is not None and not self.cross_encoder.strip():
            raise ValueError("cross_encoder must be a local model directory or null")
        return self
