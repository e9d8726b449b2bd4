"""The shipped job files validate, and jobs/scifact.yaml keeps the SciFact test data out of everything but evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedforge.spec import load_spec

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_shipped_job_files_validate(path: Path) -> None:
    spec = load_spec(path)
    assert spec.stages, f"{path.name} runs no stage"


def test_scifact_job_trains_on_the_corpus_only_and_evaluates_on_the_test_claims() -> None:
    spec = load_spec(Path(__file__).resolve().parents[2] / "jobs" / "scifact.yaml")
    stages = spec.stages
    assert list(stages) == ["ingest", "analyze_vocab", "chunk", "generate", "mine", "train", "evaluate", "embed"]
    sources = [s.path for s in stages["ingest"].sources]
    assert sources == ["beir:scifact"]  # a BEIR directory: ingest reads its corpus.jsonl, never queries or qrels
    assert stages["generate"].backend == "vllm"
    assert stages["train"].loss in ("mnrl", "cached_mnrl") and stages["train"].matryoshka_dims[0] == 384
    assert stages["evaluate"].datasets == ["beir:scifact"] and stages["evaluate"].split == "test"
    assert stages["evaluate"].dims == [384, 192, 96, 48] and "base" in stages["evaluate"].models
    assert stages["evaluate"].bm25
