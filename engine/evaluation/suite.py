"""Benchmark suites: a small YAML of datasets × models × dimensions (× quantizations), validated by pydantic,
with optional reference figures the run is checked against.

::

    # embedforge bench benchmarks/suites/shared.yaml --out runs/bench/shared
    name: shared
    datasets: [beir:scifact, {path: builtin:adi}]
    models: [all-MiniLM-L6-v2, bm25]
    dims: [384, 192, 96, 48]
    expect:
      - {dataset: scifact, model: all-MiniLM-L6-v2, dim: 384, value: 0.645, tolerance: 0.003}

Relative dataset and model paths are resolved against the suite file's directory; ``beir:NAME`` is a dataset
fetched by ``embedforge datasets get NAME``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    field_validator,
)

from embedforge.configs.evaluate import EvaluateConfig
from embedforge.evaluation.harness import parse_model_ref
from embedforge.search.bm25 import STEMMER, check_stemmer


class SuiteDataset(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    path: str
    """BEIR directory (relative to the suite file) or ``builtin:<name>``."""
    split: str = "test"
    """qrels split evaluated."""


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    dataset: str
    """Dataset name (its directory name)."""
    model: str
    """Model label as it appears in the results."""
    dim: int | None = None
    """Dimension (null for BM25)."""
    quantization: str = "none"
    """Quantization of the row."""
    metric: str = "ndcg_at_10"
    """Metric key of results.json."""
    value: float
    """Reference value."""
    tolerance: float = Field(0.003, ge=0)
    """Allowed absolute difference."""
    informative: bool = False
    """Reported, but a miss does not fail the run (a reference figure not reproduced and explained in a note)."""


class Suite(BaseModel):
    """A benchmark suite: every model on every dataset at every dimension."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = "suite"
    """Name shown in the report."""
    datasets: list[SuiteDataset] = Field(min_length=1)
    """BEIR datasets (a path string or ``{path, split}``)."""
    models: list[str] = Field(min_length=1)
    """Packaged names, local model directories (``label=path`` names them) or ``bm25``; the first is the
    reference of the significance tests."""
    dims: list[int] = Field(default_factory=list)
    """Matryoshka dimensions; empty = each model's full dimension."""
    quantizations: list[Literal["none", "int8", "binary", "binary_rescore"]] = Field(
        default_factory=lambda: ["none", "int8", "binary"])
    """Index variants per dimension."""
    top_k: int = Field(100, ge=10)
    """Results per query."""
    hybrid: list[Literal["rrf", "zscore"]] = Field(default_factory=list)
    """Also report each dense model fused with BM25 (``rrf`` and/or ``zscore``) at every dimension."""
    bm25_weights: list[PositiveFloat] = Field(default_factory=lambda: [1.0], min_length=1)
    """``hybrid``: BM25's weight(s) against the dense model's 1 (the ``evaluate`` stage's ``bm25_weights``)."""
    bm25_stemmer: Annotated[str | None, AfterValidator(check_stemmer)] = STEMMER
    """Snowball stemmer of BM25's words (the ``evaluate`` stage's ``bm25_stemmer``); null for the published
    BEIR reference figures, which were made without stemming."""
    score_by: Literal["document", "best_passage"] = "document"
    """``document``: one vector per document; ``best_passage``: documents split into passages, scored by the best
    (the ``evaluate`` stage's ``score_by``)."""
    passage_tokens: int | None = Field(None, gt=8)
    """``best_passage``: tokens per passage (null: the model's max sequence length)."""
    latency: bool = True
    """Measure encode and search latency."""
    latency_queries: int = Field(64, ge=1)
    """Queries timed for encode latency."""
    search_latency_queries: int = Field(100, ge=1)
    """Queries timed for search latency."""
    expect: list[Expectation] = Field(default_factory=list)
    """Reference figures checked after the run."""

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    def config(self, dtype: str = "fp32") -> EvaluateConfig:
        """The ``evaluate`` stage config this suite runs with (its models and datasets are resolved here)."""
        return EvaluateConfig(models=self.models, dims=self.dims, quantizations=self.quantizations, top_k=self.top_k,
                              hybrid=self.hybrid, bm25_weights=self.bm25_weights,
                              bm25_stemmer=self.bm25_stemmer, score_by=self.score_by, passage_tokens=self.passage_tokens,
                              latency=self.latency, latency_queries=self.latency_queries,
                              search_latency_queries=self.search_latency_queries, dtype=dtype, cache=False,
                              bm25=False, heldout=False)


class SuiteError(ValueError):
    """A suite file problem, naming the file and the field."""


def _resolve(base: Path, ref: str) -> str:
    if ref.startswith(("builtin:", "beir:")) or Path(ref).is_absolute():
        return ref
    candidate = base / ref
    return str(candidate.resolve()) if candidate.exists() else ref


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite YAML; relative paths resolve against its directory."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from None
    try:
        suite = Suite.model_validate(data if data is not None else {})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                             for e in err.errors())
        raise SuiteError(f"{path}: invalid suite: {problems}") from None
    base = path.parent
    for ds in suite.datasets:
        ds.path = _resolve(base, ds.path)
    models = []
    for text in suite.models:
        ref = parse_model_ref(text)
        resolved = _resolve(base, ref.ref)
        models.append(text if resolved == ref.ref else f"{ref.label}={resolved}")
    suite.models = models
    return suite


def check_expectations(rows: list[dict[str, Any]], expect: list[Expectation]) -> list[dict[str, Any]]:
    """Each expectation with the measured value and ``ok`` (a missing row is not ok)."""
    out = []
    for e in expect:
        match = [r for r in rows if r["dataset"] == e.dataset and r["model"] == e.model and r["dim"] == e.dim
                 and r["quantization"] == e.quantization]
        measured = match[0].get(e.metric) if match else None
        ok = measured is not None and abs(measured - e.value) <= e.tolerance
        out.append({**json.loads(e.model_dump_json()), "measured": measured, "ok": ok})
    return out
