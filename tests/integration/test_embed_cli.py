"""The real CLI: the ``embed`` stage in a job, ``embedforge search`` on its index, ``embedforge embed`` on JSONL."""

from __future__ import annotations

import json
from pathlib import Path

from embedforge.data.schemas import embeddings_schema
from embedforge.data.shards import read_table


def test_embed_stage_then_search(cli, cli_here, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("# embedforge run job.yaml\nname: emb\nbase_model: all-MiniLM-L6-v2\nstages:\n"
                   "  ingest: {sources: [{path: builtin:adi}]}\n  chunk: {max_tokens: 128}\n"
                   "  embed: {dims: [384, 64], index: {kinds: [flat, hnsw], bm25: true}}\n")
    env = {"EMBEDFORGE_CACHE": str(tmp_path / "cache"), "EMBEDFORGE_ENCODER_BACKEND": "torch"}  # a cold cache
    cli("run", str(job), f"run_dir={tmp_path / 'runs'}", env=env)
    stage_dir = next((tmp_path / "runs" / "emb").glob("embed-*"))
    chunk_dir = next((tmp_path / "runs" / "emb").glob("chunk-*"))
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    table = read_table(stage_dir / "shards")
    assert table.schema == embeddings_schema(384)
    assert sorted(table.column("id").to_pylist()) == sorted(read_table(chunk_dir).column("chunk_id").to_pylist())
    assert manifest["rows_out"] == table.num_rows and manifest["counts"]["tokens"] > 0
    assert manifest["counts"]["cache_hits"] == 0 and manifest["model"]["backend"] == "torch"
    assert manifest["throughput"]["docs_per_s"] > 0 and manifest["model"]["ref"] == "base"
    assert len(manifest["indexes"]) == 5 and read_table(stage_dir / "dims" / "d64").num_rows == table.num_rows
    out = cli("search", str(stage_dir), "computer-based information retrieval", "--k", "5", "--json", env=env).stdout
    hits = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(hits) == 5 and hits[0]["score"] >= hits[-1]["score"] and hits[0]["text"]
    assert {h["id"] for h in hits} <= set(table.column("id").to_pylist())
    # hybrid: the BM25 index holds the same rows; a query quoting a passage's rare words finds that passage
    bm25_meta = json.loads((stage_dir / "index" / "bm25" / "meta.json").read_text())
    assert bm25_meta["rows"] == table.num_rows and bm25_meta["model_id"] == manifest["model"]["model_id"]
    assert bm25_meta["stemmer"] == "english"  # index.bm25_stemmer's default; search stems queries the same way
    chunks = read_table(chunk_dir).to_pylist()
    target = max(chunks, key=lambda c: len(c["text"]))
    words = sorted(set(target["text"].split()), key=lambda w: (-len(w), w))[:6]  # no set-order ties
    quotes = {"zscore": " ".join(words), "rrf": target["text"]}  # rare words; the whole passage (both lists' #1)
    for fusion, query in quotes.items():
        out = cli_here("search", str(stage_dir), query, "--k", "10", "--hybrid", fusion, "--json", env=env).stdout
        fused = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert len(fused) == 10 and fused[0]["id"] == target["chunk_id"], fusion
        assert all(a["score"] >= b["score"] for a, b in zip(fused, fused[1:], strict=False))
    bad = cli_here("search", str(stage_dir), "x", "--hybrid", "max", env=env, check=False)
    assert bad.returncode == 2 and "zscore or rrf" in bad.stdout + bad.stderr
    # one result per document: each document at its best chunk, in the order of the plain ranking
    doc_of = {c["chunk_id"]: c["doc_id"] for c in chunks}
    query = "computer-based information retrieval"
    out = cli_here("search", str(stage_dir), query, "--k", str(table.num_rows), "--json", env=env).stdout
    firsts: dict[str, str] = {}
    for hit in (json.loads(line) for line in out.splitlines() if line.startswith("{")):
        firsts.setdefault(doc_of[hit["id"]], hit["id"])
    assert len(firsts) < table.num_rows  # some documents have several chunks
    out = cli_here("search", str(stage_dir), query, "--k", "30", "--per-doc", "--json", env=env).stdout
    per_doc = [json.loads(line)["id"] for line in out.splitlines() if line.startswith("{")]
    assert per_doc == list(firsts.values())[:30]


def test_embed_command_quarantines_and_resumes(cli, cli_here, tmp_path: Path) -> None:
    src = tmp_path / "corpus.jsonl"
    rows = [{"id": f"p{i}", "text": f"passage number {i} about {w}"} for i, w in enumerate("abcdefgh")]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "x", "text": ""}\n{"text": "no id"}\n')
    out = tmp_path / "out"
    args = ("embed", "--model", "all-MiniLM-L6-v2", "--input", str(src), "--output", str(out), "--shard-rows", "4",
            "--index", "none", "--dims", "128")
    cli(*args)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_out"] == 8 and manifest["quarantined"] == 2
    assert manifest["counts"]["run_shards_written"] == 3
    assert read_table(out / "shards").schema == embeddings_schema(128)
    cli_here(*args)  # a second run finds every shard done
    again = json.loads((out / "manifest.json").read_text())
    assert again["counts"]["run_shards_skipped"] == 3 and again["counts"]["run_shards_written"] == 0
    assert again["rows_out"] == 8
