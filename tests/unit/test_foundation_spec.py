"""Job specs: validation errors, overrides, field docs, and stage hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedforge.configs.base import hashed_fields
from embedforge.runner import plan
from embedforge.spec import SpecError, load_spec, validate_dict
from embedforge.stages import STAGES

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("job", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_job_file_validates(job: Path) -> None:
    spec = load_spec(job)
    assert spec.stages, f"{job} has no stages"
    first = job.read_text().splitlines()[0]
    assert first.startswith("# embedforge "), f"{job}: first line must be a comment with the command that runs it"


def test_every_config_field_has_default_and_description() -> None:
    for info in STAGES:
        config = info.config
        for name, field in config.model_fields.items():
            assert field.description, f"{config.__name__}.{name} has no docstring"
        if info.name != "ingest":  # ingest needs sources; everything else validates empty
            config()


def test_unknown_key_names_file_field_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nstages:\n  chunk:\n    max_tokns: 3\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert str(path) in msg and "stages.chunk.max_tokns" in msg and "3" in msg


def test_bad_value_says_what_was_expected(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nstages:\n  chunk:\n    max_tokens: lots\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "stages.chunk.max_tokens" in str(err.value) and "integer" in str(err.value) and "lots" in str(err.value)


def test_generate_dtype_takes_the_short_names_other_stages_use(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, "name: t\nstages:\n  generate:\n    backend_vllm: {dtype: bf16}\n"))
    long = load_spec(_write(tmp_path, "name: t\nstages:\n  generate:\n    backend_vllm: {dtype: BFloat16}\n"))
    assert spec.stages["generate"].backend_vllm.dtype == "bfloat16" == long.stages["generate"].backend_vllm.dtype
    assert hashed_fields(spec.stages["generate"]) == hashed_fields(long.stages["generate"])  # same stage hash
    assert load_spec(_write(tmp_path, "name: t\nstages:\n  generate: {}\n")).stages["generate"].backend_vllm.dtype == "auto"
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, "name: t\nstages:\n  generate:\n    backend_vllm: {dtype: int4}\n"))
    assert "stages.generate.backend_vllm.dtype" in str(err.value) and "bf16, fp16, fp32 or auto" in str(err.value)


def test_train_and_embed_take_dtype_as_well_as_precision(tmp_path: Path) -> None:
    a = load_spec(_write(tmp_path, "name: t\nstages:\n  train: {dtype: fp32}\n  embed: {dtype: bf16}\n"))
    b = load_spec(_write(tmp_path, "name: t\nstages:\n  train: {precision: fp32}\n  embed: {precision: bf16}\n"))
    assert a.stages["train"].precision == "fp32" and a.stages["embed"].precision == "bf16"
    assert hashed_fields(a.stages["train"]) == hashed_fields(b.stages["train"])  # same stage hash either way
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, "name: t\nstages:\n  train: {dtype: int4}\n"))
    assert "stages.train.dtype" in str(err.value) and "int4" in str(err.value)


def test_unknown_stage_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown stage.*known stages: .*chunk"):
        load_spec(_write(tmp_path, "stages:\n  chonk: {}\n"))


def test_cross_field_check_names_field() -> None:
    with pytest.raises(SpecError, match="overlap_tokens"):
        validate_dict({"stages": {"chunk": {"max_tokens": 64, "overlap_tokens": 40}}})


def test_ingest_without_sources_is_an_error() -> None:
    with pytest.raises(SpecError, match="sources"):
        validate_dict({"stages": {"ingest": {}}})


def test_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: t\nstages:\n  ingest:\n    sources: [{path: a.jsonl}]\n  chunk: {}\n")
    spec = load_spec(path, ["stages.chunk.max_tokens=128", "stages.ingest.sources.0.path=b.jsonl", "name=other"])
    assert spec.stages["chunk"].max_tokens == 128
    assert spec.stages["ingest"].sources[0].path == "b.jsonl"
    assert spec.name == "other"
    with pytest.raises(SpecError, match="expected key.sub=value"):
        load_spec(path, ["stages.chunk.max_tokens"])
    with pytest.raises(SpecError, match="stages.chunk.bogus"):
        load_spec(path, ["stages.chunk.bogus=1"])


def test_hash_follows_result_fields_only_and_flows_downstream(tmp_path: Path) -> None:
    base = {"name": "t", "run_dir": str(tmp_path), "stages": {"ingest": {"sources": [{"path": "x.jsonl"}]}, "chunk": {}}}
    p0 = plan(validate_dict(base))
    batch = validate_dict({**base, "stages": {**base["stages"], "chunk": {"batch_docs": 7}}})
    assert "batch_docs" not in hashed_fields(batch.stages["chunk"])
    assert plan(batch)["chunk"].hash == p0["chunk"].hash  # batch size does not change results
    changed = plan(validate_dict({**base, "stages": {**base["stages"], "chunk": {"max_tokens": 100}}}))
    assert changed["chunk"].hash != p0["chunk"].hash and changed["ingest"].hash == p0["ingest"].hash
    upstream = plan(validate_dict({**base, "stages": {**base["stages"], "ingest": {"sources": [{"path": "y.jsonl"}]}}}))
    assert upstream["ingest"].hash != p0["ingest"].hash and upstream["chunk"].hash != p0["chunk"].hash
    assert p0["chunk"].dir == tmp_path / "t" / f"chunk-{p0['chunk'].hash}"


def test_changed_source_file_changes_the_ingest_hash(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "1", "text": "a"}\n')
    spec = {"name": "t", "run_dir": str(tmp_path), "stages": {"ingest": {"sources": [{"path": str(corpus)}]}, "chunk": {}}}
    before = plan(validate_dict(spec))
    corpus.write_text('{"_id": "1", "text": "b"}\n')
    after = plan(validate_dict(spec))
    assert after["ingest"].hash != before["ingest"].hash and after["chunk"].hash != before["chunk"].hash
