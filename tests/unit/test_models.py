"""Model names resolve like the ecosystem's: local directory → packaged model → Hugging Face cache (snapshot
layout, offline) → hub; the offline error names the id and how to make it available. The cache is built on disk
here (a snapshot of the packaged MiniLM); no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from embedforge.models import ModelNotFound, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_snapshot(cache: Path, repo_id: str, source: Path) -> Path:
    """``models--org--name/{refs/main, snapshots/<commit>/…, blobs/…}`` as huggingface_hub writes it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = file.relative_to(source)
        blob = repo / "blobs" / f"{abs(hash(str(rel))):x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(blob)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_id_resolves_to_its_cached_snapshot_offline(offline_cache: Path, minilm_path: Path) -> None:
    snapshot = _fake_snapshot(offline_cache, "acme/minilm-domain", minilm_path)
    assert resolve_model("acme/minilm-domain") == snapshot
    assert resolve_model(f"acme/minilm-domain@{COMMIT}") == snapshot

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model("acme/minilm-domain")), device="cpu")
    assert model.get_embedding_dimension() == 384


def test_hf_hub_cache_wins_over_hf_home(offline_cache: Path, tmp_path: Path, minilm_path: Path, monkeypatch) -> None:
    other = tmp_path / "elsewhere"
    snapshot = _fake_snapshot(other, "acme/other", minilm_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    assert resolve_model("acme/other") == snapshot


def test_local_directory_then_packaged_name(offline_cache: Path, tmp_path: Path, minilm_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "all-MiniLM-L6-v2"
    local.mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("all-MiniLM-L6-v2") == Path("all-MiniLM-L6-v2")  # a directory of that name comes first
    monkeypatch.chdir(offline_cache.parent.parent.parent)
    assert resolve_model("all-MiniLM-L6-v2") == minilm_path


def test_offline_miss_names_the_id_and_the_way_to_get_it(offline_cache: Path) -> None:
    with pytest.raises(ModelNotFound) as err:
        resolve_model("BAAI/bge-small-en-v1.5")
    message = str(err.value)
    assert "model 'BAAI/bge-small-en-v1.5'" in message and "HF_HUB_OFFLINE is set" in message
    assert "hf download BAAI/bge-small-en-v1.5" in message and str(offline_cache) in message


def test_job_with_a_hub_base_model_runs_from_the_cache(cli, tmp_path: Path, minilm_path: Path) -> None:
    cache = tmp_path / "hub"
    _fake_snapshot(cache, "acme/minilm-domain", minilm_path)
    job = tmp_path / "job.yaml"
    job.write_text(f"name: hubjob\nrun_dir: {tmp_path / 'runs'}\nbase_model: acme/minilm-domain\nstages:\n"
                   "  ingest: {sources: [{path: builtin:adi}]}\n  chunk: {max_tokens: 128}\n")
    cli("run", str(job), env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    missing = cli("run", str(job), "--force", env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}, check=False)
    out = " ".join((missing.stdout + missing.stderr).split())
    assert missing.returncode != 0 and "model 'acme/minilm-domain'" in out and "Traceback" not in out


def test_mine_cross_encoder_resolves_a_cached_hub_id(offline_cache: Path, minilm_path: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    from embedforge.configs.mine import MineConfig
    from embedforge.stages.base import StageFailed
    from embedforge.stages.mine import _load_cross_encoder

    CrossEncoder(str(minilm_path), num_labels=1, device="cpu").save_pretrained(str(tmp_path / "ce"))
    _fake_snapshot(offline_cache, "acme/reranker", tmp_path / "ce")
    ce = _load_cross_encoder(MineConfig(cross_encoder="acme/reranker"), "cpu")
    assert len(ce.predict([("a query", "a passage")])) == 1
    with pytest.raises(StageFailed, match=r"mine: cross_encoder: model 'acme/missing' .*hf download acme/missing"):
        _load_cross_encoder(MineConfig(cross_encoder="acme/missing"), "cpu")
