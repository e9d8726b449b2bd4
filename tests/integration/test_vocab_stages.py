"""The vocabulary stages and commands through the real CLI on the built-in ADI corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

JOB = """\
# embedforge run job.yaml
name: vocab
run_dir: {run_dir}
base_model: all-MiniLM-L6-v2
stages:
  ingest:
    sources:
      - path: builtin:adi
  analyze_vocab:
    threshold: 1.25
    top_terms: 10
  train_tokenizer:
    vocab_size: 2000
  extend_vocab:
    when: always
    top_n: 5
    min_frequency: 2
"""


@pytest.fixture(scope="module")
def job_run(tmp_path_factory: pytest.TempPathFactory, cli) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vocab_job")
    job = root / "job.yaml"
    job.write_text(JOB.format(run_dir=root / "runs"))
    cli("run", str(job))
    return job, root / "runs" / "vocab"


def _stage_dir(runs: Path, name: str) -> Path:
    (found,) = [p for p in runs.glob(f"{name}-*") if (p / "_SUCCESS").is_file()]
    return found


def test_analyze_vocab_stage_writes_report_and_decision(job_run) -> None:
    _, runs = job_run
    out = _stage_dir(runs, "analyze_vocab")
    manifest = json.loads((out / "manifest.json").read_text())
    decision = manifest["decision"]
    assert decision["threshold"] == 1.25
    assert decision["extend"] is (decision["ratio"] > 1.25)
    assert 1.0 < decision["ratio"] < 1.25  # ADI's library-science prose is not shredded by MiniLM's vocabulary
    assert manifest["counts"]["documents"] == 82
    assert (out / "vocab_ratio_hist.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "vocab_report.md").read_text()
    assert "keep the base tokenizer" in report and "thesauri" in report


def test_train_tokenizer_stage_writes_versioned_artifact(job_run) -> None:
    _, runs = job_run
    out = _stage_dir(runs, "train_tokenizer")
    info = json.loads((out / "manifest.json").read_text())["tokenizer"]
    assert (out / info["file"]).is_file() and info["file"] == f"tokenizer-{info['sha256'][:12]}.json"
    assert info["special_tokens"] == info["base_special_tokens"]
    assert (out / "tokenizer" / "tokenizer.json").is_file()


def test_extend_vocab_stage_makes_a_loadable_model(job_run, st_model) -> None:
    from sentence_transformers import SentenceTransformer

    _, runs = job_run
    out = _stage_dir(runs, "extend_vocab")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["decision"] == {"extend": True, "reason": "when: always"}
    assert manifest["counts"]["terms_added"] == 5
    assert manifest["ratio_after"] < manifest["ratio_before"]
    model = SentenceTransformer(str(out / "model"), device="cpu")
    assert len(model.tokenizer) == len(st_model.tokenizer) + 5
    text = "A plain sentence about information retrieval."
    assert float(model.encode([text]) @ st_model.encode([text]).T) == pytest.approx(1.0, abs=1e-6)


def test_extend_vocab_auto_follows_the_analysis(job_run) -> None:
    from embedforge.runner import plan, run_job
    from embedforge.spec import load_spec

    job, _ = job_run
    spec = load_spec(job, ["stages.extend_vocab.when=auto"])
    manifest = run_job(spec, ["extend_vocab"])["extend_vocab"]
    assert manifest["decision"]["extend"] is False and manifest["decision"]["reason"].startswith("analyze_vocab:")
    model = plan(spec)["extend_vocab"].dir / "model"
    assert model.is_symlink() and (model / "modules.json").is_file()


def test_vocab_analyze_command_compares_tokenizers(job_run, cli, tmp_path: Path) -> None:
    _, runs = job_run
    trained = next(_stage_dir(runs, "train_tokenizer").glob("tokenizer-*.json"))
    proc = cli("vocab", "analyze", "--model", "all-MiniLM-L6-v2", "--corpus", "builtin:adi",
               "--tokenizer", str(trained), "--out", str(tmp_path / "rep"), "--threshold", "1.05")
    assert "EXTEND" in proc.stdout + proc.stderr
    stats = json.loads((tmp_path / "rep" / "vocab_stats.json").read_text())
    assert [t["vocab_size"] for t in stats["tokenizers"]][0] == 30522
    assert len(stats["tokenizers"]) == 2 and stats["decision"]["extend"] is True


def test_vocab_commands_reject_bad_corpora(cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = cli("vocab", "analyze", "--corpus", str(empty), "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 1 and "no usable documents" in proc.stdout + proc.stderr
    binary = tmp_path / "blob.jsonl"
    binary.write_bytes(bytes(range(256)) * 20)
    proc = cli("vocab", "train", "--corpus", str(binary), "--out", str(tmp_path / "t"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "invalid UTF-8" in out and "Traceback" not in out
