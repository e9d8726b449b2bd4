"""The Ray Data embed executor on a real local Ray cluster: it sizes itself, cannot hang silently, reads JSONL,
and writes the local executor's shards (names, ids, order, vectors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedforge.data.schemas import CHUNKS, embeddings_schema
from embedforge.data.shards import list_shards, read_table
from embedforge.distributed.pool import Stalled, plan_pool
from embedforge.encoding.bulk_embed import OutputOptions, embed_blocks, iter_blocks

REPO = Path(__file__).resolve().parents[2]


def _chunks(root: Path, files: int = 2, rows: int = 5) -> Path:
    shards = root / "shards"
    shards.mkdir(parents=True)
    for i in range(files):
        table = [{"chunk_id": f"v{i}-{j}", "doc_id": f"d{i}", "doc_version": f"v{i}", "idx": j,
                  "title": "" if (i, j) == (1, 2) else f"Doc {i}",  # empty: no title and no text
                  "text": "" if (i, j) == (1, 2) else f"passage {j} of document {i} on subject {3 * i + j}",
                  "start_char": 0, "end_char": 5, "n_tokens": 6} for j in range(rows)]
        pq.write_table(pa.Table.from_pylist(table, schema=CHUNKS), shards / f"part-{i:05d}.parquet")
    return root


def _clean_ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def local_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A 2-CPU Ray cluster started in this process (the environment variables ray.init exports are undone)."""
    import ray

    for var in ("RAY_AUTH_MODE", "RAY_CLIENT_MODE", "RAY_USAGE_STATS_ENABLED", "PYTHONBREAKPOINT"):
        monkeypatch.setenv(var, os.environ.get(var, ""))
        if not os.environ[var]:
            monkeypatch.delenv(var)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _vectors(directory: Path) -> tuple[list[str], np.ndarray]:
    table = read_table(directory)
    return table.column("id").to_pylist(), np.array(table.column("vector").to_pylist(), np.float32)


def test_pool_leaves_cpu_for_reads() -> None:
    two = plan_pool({"CPU": 2.0})  # the 2-CPU laptop: one actor, one CPU left for the read tasks
    assert (two.max_actors, two.cpus_per_actor, two.io_cpus) == (1, 1.0, 1.0)
    assert two.threads == 2  # ...which its threads use between reads (reserving is not computing)
    forced = plan_pool({"CPU": 2.0}, actors=2)  # two actors asked for: they share the CPU the reads do not need
    assert forced.max_actors == 2 and forced.cpus_per_actor * 2 + forced.io_cpus <= 2.0
    assert forced.threads == 1  # one thread each: the two actors' threads fill the two cores, no more
    big = plan_pool({"CPU": 32.0})
    assert big.max_actors == 7 and big.cpus_per_actor == 4.0 and big.threads == 4
    gpu = plan_pool({"CPU": 16.0, "GPU": 8.0})
    assert (gpu.max_actors, gpu.gpus_per_actor) == (8, 1) and gpu.cpus_per_actor * 8 <= 15.0
    assert plan_pool({"CPU": 16.0, "GPU": 8.0}, use_gpu=False).gpus_per_actor == 0
    tiny = plan_pool({"CPU": 1.0})
    assert tiny.max_actors == 1 and tiny.cpus_per_actor + tiny.io_cpus <= 1.0


def test_default_settings_on_two_cpus_complete(tmp_path: Path, minilm_path: Path, st_model) -> None:
    """The hang: four Parquet files, default pool settings, a 2-CPU cluster. Must finish, not wait forever."""
    source = _chunks(tmp_path / "chunks", files=4, rows=6)
    out = tmp_path / "ray-out"
    script = textwrap.dedent(f"""
        import json, ray
        from pathlib import Path
        from embedforge.distributed.ray_embed import embed_with_ray
        from embedforge.encoding.bulk_embed import OutputOptions
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        totals = embed_with_ray({str(source)!r}, Path({str(out)!r}), {str(minilm_path)!r},
                                OutputOptions(dims=[384, 96]), fmt="chunks", device="cpu", backend="torch")
        print(json.dumps(totals))
    """)
    proc = subprocess.Popen([sys.executable, "-P", "-c", script], cwd=tmp_path, env=_clean_ray_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the default-settings Ray run did not finish in 300 s (the pool starved the reads)")
    assert proc.returncode == 0, stderr[-3000:]
    totals = json.loads(stdout.strip().splitlines()[-1])
    assert totals["rows_embedded"] == 23 and totals["quarantined"] == 1 and totals["shards_written"] == 4
    assert [p.name for p in list_shards(out)] == [f"part-{i:05d}.parquet" for i in range(4)]
    table = read_table(out / "shards")
    assert table.schema == embeddings_schema(384)
    texts = {r["chunk_id"]: f"{r['title']} {r['text']}" for r in read_table(source).to_pylist()}
    ids, vectors = _vectors(out / "shards")
    assert ids == [r["chunk_id"] for r in read_table(source).to_pylist() if r["text"]]  # input order
    ref = st_model.encode([texts[i] for i in ids], normalize_embeddings=True)
    assert (vectors * ref).sum(1).min() > 0.9999
    assert read_table(out / "dims" / "d96" / "shards").column("id").to_pylist() == ids
    bad = [json.loads(line) for p in (out / "quarantine").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert [(b["reason"], b["id"]) for b in bad] == [("empty text", "v1-2")]
    assert bad[0]["source"].endswith("part-00001.parquet#2")


def test_jsonl_through_ray_equals_local(tmp_path: Path, local_ray: None, encoder) -> None:
    from embedforge.distributed.ray_embed import embed_with_ray

    src = tmp_path / "corpus.jsonl"
    lines = []
    for i in range(45):
        row = {"_id": f"d{i}", "title": f"Title {i}", "text": f"body text number {i} " * (1 + i % 7)}
        if i % 10 == 3:
            row["text"] = ""  # title-only: a document, embedded as its title
        lines.append(json.dumps(row))
    lines[20] = "{not json"
    lines[30] = json.dumps({"_id": "empty", "title": "", "text": "  "})
    lines.insert(10, "   ")  # blank lines are skipped by both executors
    src.write_text("\n".join(lines) + "\n")
    opts = OutputOptions(dims=[384])
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    totals = embed_with_ray(src, ray_out, str(encoder.path), opts, shard_rows=16, batch_rows=8, device="cpu",
                            backend=encoder.backend)
    local = embed_blocks(encoder, iter_blocks(src, "jsonl", 16), local_out, opts, cache=False)
    assert totals["rows_embedded"] == local["rows_embedded"] == 43 and totals["quarantined"] == 2
    assert [p.name for p in list_shards(ray_out)] == [p.name for p in list_shards(local_out)] == \
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    ids, vectors = _vectors(ray_out / "shards")
    local_ids, local_vectors = _vectors(local_out / "shards")
    assert ids == local_ids and "d3" in ids and "d13" in ids  # same order; title-only rows embedded
    assert (vectors * local_vectors).sum(1).min() > 0.99999
    title_only = encoder.encode(["Title 3"])[0]
    assert float(vectors[ids.index("d3")] @ title_only) > 0.9999
    reasons = sorted(json.loads(line)["reason"] for p in (ray_out / "quarantine").glob("*.jsonl")
                     for line in p.read_text().splitlines())
    assert reasons == ["empty text", "invalid JSON (Expecting property name enclosed in double quotes)"]
    again = embed_with_ray(src, ray_out, str(encoder.path), opts, shard_rows=16, device="cpu")
    assert again["shards_skipped"] == 3 and again["rows_embedded"] == 0  # finished: nothing is redone


def test_windows_of_input_files_write_what_one_local_run_writes(tmp_path: Path, local_ray: None, encoder) -> None:
    from embedforge.distributed.ray_embed import embed_with_ray

    source = _chunks(tmp_path / "chunks", files=3, rows=7)
    opts = OutputOptions(dims=[384])
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    totals = embed_with_ray(source, ray_out, str(encoder.path), opts, shard_rows=4, batch_rows=3, device="cpu",
                            backend=encoder.backend, window_rows=10)  # 7 + 7 > 10: one Dataset per file
    local = embed_blocks(encoder, iter_blocks(source, "chunks", 4), local_out, opts, cache=False)
    assert totals["rows_embedded"] == local["rows_embedded"] == 20 and totals["shards_written"] == 6
    assert [p.name for p in list_shards(ray_out)] == [p.name for p in list_shards(local_out)]
    ids, vectors = _vectors(ray_out / "shards")
    local_ids, local_vectors = _vectors(local_out / "shards")
    assert ids == local_ids and (vectors * local_vectors).sum(1).min() > 0.99999

    lost = list_shards(ray_out)[3]  # the second file's second shard: only that file's window runs again
    lost.unlink()
    again = embed_with_ray(source, ray_out, str(encoder.path), opts, shard_rows=4, batch_rows=3, device="cpu",
                           backend=encoder.backend, window_rows=10)
    assert (again["shards_written"], again["shards_skipped"]) == (1, 5)
    assert _vectors(ray_out / "shards")[0] == local_ids


def test_watchdog_fails_a_stalled_run_naming_the_stage(tmp_path: Path, local_ray: None, minilm_path: Path) -> None:
    from embedforge.distributed.ray_embed import EncodeBatch, embed_with_ray

    class StuckActor(EncodeBatch):
        def __call__(self, batch):  # an actor that never returns a block
            time.sleep(3600)

    source = _chunks(tmp_path / "chunks")
    t0 = time.monotonic()
    with pytest.raises(Stalled, match=r"^embed-stuck: no block finished on Ray for 15 s \(0/10 rows back"):
        embed_with_ray(source, tmp_path / "out", str(minilm_path), OutputOptions(dims=[384]), stall_s=15,
                       device="cpu", backend="torch", stage="embed-stuck", actor_cls=StuckActor)
    assert time.monotonic() - t0 < 120
    assert not list_shards(tmp_path / "out")
