"""Config of the ``evaluate`` stage: which models, on which datasets, at which dimensions and quantizations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveFloat, field_validator, model_validator

from embedforge.configs.base import StageConfig, no_hash
from embedforge.search.bm25 import STEMMER, check_stemmer

QuantizationName = Literal["none", "int8", "binary", "binary_rescore"]


class EvaluateConfig(StageConfig):
    """Evaluate the base model, this job's trained model and BM25 on BEIR datasets and the held-out split."""

    models: list[str] = Field(default_factory=lambda: ["base", "train"])
    """Models to compare: ``base``, ``train`` (this job's trained model; skipped when the job has no train stage),
    ``bm25``, a packaged name or a local directory; ``label=path`` names a row. The first is the reference of the
    significance tests."""
    reference: str | None = None
    """Label of the model the others are tested against (null: the first dense model)."""
    bm25: bool = True
    """Add a BM25 baseline row per dataset (bm25s, parameters ``bm25_k1`` and ``bm25_b``)."""
    bm25_k1: float = Field(0.9, gt=0)
    """BM25 term-frequency saturation (0.9, Pyserini's BEIR setting)."""
    bm25_b: float = Field(0.4, ge=0, le=1)
    """BM25 length normalization (0.4, Pyserini's BEIR setting)."""
    bm25_stemmer: Annotated[str | None, AfterValidator(check_stemmer)] = STEMMER
    """Snowball stemmer of BM25's words (a PyStemmer language such as ``english``, ``german``; null: words as
    they are, as in the BEIR reference figures). English stemming was chosen on the development sets."""
    hybrid: list[Literal["rrf", "zscore"]] = Field(default_factory=list)
    """Also fuse each dense model's float search with BM25's top ``top_k`` at every dimension: ``rrf``
    (reciprocal rank fusion, constant ``rrf_k``) and/or ``zscore`` (standardized scores, equal weights); rows
    ``<model>+bm25-<fusion>``, tested against the reference model like the others."""
    rrf_k: float = Field(60.0, gt=0)
    """Reciprocal rank fusion constant (60, as in Cormack et al. 2009)."""
    bm25_weights: list[PositiveFloat] = Field(default_factory=lambda: [1.0], min_length=1)
    """``hybrid``: BM25's weight in the fused score, the dense model's being 1 (``[1.0]``: equal weights). Each
    weight gives its own rows; a weight other than 1 is named in the label (``<model>+bm25-zscore-w0.5``)."""
    datasets: list[str] = Field(default_factory=list)
    """BEIR directories (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), ``builtin:<name>``, or ``beir:<name>``
    (fetched by ``embedforge datasets get <name>``)."""
    split: str = "test"
    """qrels split of the BEIR datasets (only queries judged in ``qrels/<split>.tsv`` are evaluated)."""
    heldout: bool = True
    """Also evaluate the generate stage's ``val`` queries against the chunk corpus (when the job has both)."""
    score_by: Literal["document", "best_passage"] = "document"
    """How a dense model scores a document. ``document``: one vector per document; the model reads only its first
    ``max_seq_length`` tokens (256 for MiniLM), so the rest of a long document is never seen. ``best_passage``:
    each document is split into passages of at most ``passage_tokens`` tokens (the chunk stage's rule, the title
    in every passage) and scores as its best passage (MaxP); the index holds the passages. BM25 always reads the
    whole document."""
    passage_tokens: int | None = Field(None, gt=8)
    """``best_passage``: most tokens per passage, special tokens included (null: the model's max sequence length).
    Refused with ``score_by: document``, where it would have no effect."""
    dims: list[int] = Field(default_factory=list)
    """Matryoshka dimensions (truncate, then re-normalize); empty means the model's full dimension."""
    quantizations: list[QuantizationName] = Field(default_factory=lambda: ["none", "int8", "binary"])
    """Index variants per dimension: float (exact), int8 (per-row symmetric codes, queries too), binary (sign bits,
    Hamming), binary_rescore (Hamming candidates rescored with the float query); :mod:`embedforge.search.quantize`."""
    top_k: int = Field(100, ge=10)
    """Results retrieved per query (Recall@100 and MAP@100 need 100)."""
    hit_ks: list[int] = Field(default_factory=lambda: [1, 3, 10])
    """Cut-offs of the hit-rate metric (share of queries with a relevant result in the top k)."""
    rescore_multiplier: int = Field(4, ge=1)
    """binary_rescore: candidates fetched by Hamming distance per result kept."""
    n_resamples: int = Field(10000, ge=100)
    """Resamples of the paired randomization test."""
    latency: bool = no_hash(True)
    """Measure encode and search latency (a bounded sample of queries)."""
    latency_queries: int = no_hash(64)
    """Queries timed one at a time for encode latency."""
    search_latency_queries: int = no_hash(100)
    """Queries timed one at a time for search latency."""
    hnsw_m: int = no_hash(32)
    """HNSW graph degree of the latency measurement."""
    hnsw_ef_search: int = no_hash(128)
    """HNSW search breadth of the latency measurement."""
    dtype: str = "fp32"
    """Encoder precision: fp32, bf16 or fp16."""
    cache: bool = no_hash(True)
    """Reuse corpus and query vectors from the shared embedding cache (``$EMBEDFORGE_CACHE``), so a re-run with
    other options does not re-encode; ``corpus_docs_per_s`` is then null."""

    def input_fingerprint(self) -> list[str]:
        """Content hash of every file of every dataset, so an edited dataset re-runs evaluate."""
        from embedforge.data.fingerprint import path_fingerprint

        return [path_fingerprint(d) for d in self.datasets]

    @field_validator("dims")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        if any(d <= 0 for d in value):
            raise ValueError(f"dimensions must be positive, got {value}")
        return sorted(set(value), reverse=True)

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one model (base, train, bm25, a name or a path)")
        return value

    @model_validator(mode="after")
    def _passages(self) -> EvaluateConfig:
        if self.passage_tokens is not None and self.score_by != "best_passage":
            raise ValueError(f"passage_tokens ({self.passage_tokens}) applies only with score_by: best_passage "
                             f"(score_by is {self.score_by}): set score_by: best_passage or remove passage_tokens")
        return self
