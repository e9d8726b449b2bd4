"""The kill-and-resume drill's comparison: what it accepts as equal and what it reports as a mismatch."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from drill_compare import compare_stage, leftovers, normalize, table_hashes  # noqa: E402
from drill_resume import schedule  # noqa: E402

ROWS = [{"chunk_id": f"c{i}", "text": f"text {i}", "vector": [float(i), 0.5]} for i in range(6)]


def _stage(root: Path, rows: list[dict], manifest: dict | None = None) -> Path:
    d = root / "chunk-abc"
    (d / "shards").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), d / "shards" / "part-00000.parquet")
    (d / "_SUCCESS").write_text("abc\n")
    m = {"hash": "abc", "rows_out": len(rows), "inputs": {"ingest": {"dir": str(root / "ingest-x")}},
         "timings": {"seconds": random.random()}, "counts": {"rows_in": 6, "run_cache_hits": random.randint(0, 9)}}
    (d / "manifest.json").write_text(json.dumps(manifest or m))
    return d


def _compare(tmp_path: Path, rows: list[dict], rule: str = "exact", **tol: float):
    ref = _stage(tmp_path / "reference", ROWS)
    drill = _stage(tmp_path / "drill", rows)
    return compare_stage("chunk", ref, drill, rule, (str(tmp_path / "reference"), str(tmp_path / "drill")), **tol)


def test_identical_output_matches_despite_timings_and_run_dirs(tmp_path: Path) -> None:
    result = _compare(tmp_path, ROWS)
    assert result.ok, result.failures()
    assert result.rows == (6, 6)


@pytest.mark.parametrize(("rows", "expected"), [
    (ROWS + ROWS[:1], "duplicated rows"),
    (ROWS[:5], "rows 6 vs 5"),
    (ROWS[::-1], "same rows, different order"),
    ([*ROWS[:5], {**ROWS[5], "text": "changed"}], "content differs"),
])
def test_mismatches_are_named(tmp_path: Path, rows: list[dict], expected: str) -> None:
    result = _compare(tmp_path, rows)
    assert not result.ok
    assert any(expected in c.detail for c in result.failures()), result.failures()


def test_torn_shard_temp_files_and_missing_marker_fail(tmp_path: Path) -> None:
    ref = _stage(tmp_path / "reference", ROWS)
    drill = _stage(tmp_path / "drill", ROWS)
    shard = drill / "shards" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    (drill / "shards" / ".part-00001.parquet.abc.tmp").write_bytes(b"x")
    (drill / ".model.tmp").mkdir()
    (drill / "_SUCCESS").unlink()
    result = compare_stage("chunk", ref, drill, "exact", ())
    details = " | ".join(f"{c.path}: {c.detail}" for c in result.failures())
    assert "torn or unreadable" in details and "_SUCCESS" in details and ".model.tmp" in details
    assert leftovers(drill) == [".model.tmp", "shards/.part-00001.parquet.abc.tmp"]


def test_tolerance_rule_compares_floats_within_bounds_and_ids_exactly(tmp_path: Path) -> None:
    near = [{**r, "vector": [r["vector"][0] + 1e-4, 0.5]} for r in ROWS]
    assert not _compare(tmp_path / "a", near).ok  # exact: any bit differs
    assert _compare(tmp_path / "b", near, "tolerance", vector_atol=1e-3).ok
    assert not _compare(tmp_path / "c", near, "tolerance", vector_atol=1e-5).ok
    renamed = [{**r, "chunk_id": r["chunk_id"] + "x"} for r in ROWS]
    assert not _compare(tmp_path / "d", renamed, "tolerance", vector_atol=1.0).ok


def test_npy_and_json_metrics_under_each_rule(tmp_path: Path) -> None:
    for which, shift in (("reference", 0.0), ("drill", 1e-3)):
        d = _stage(tmp_path / which, ROWS)
        np.save(d / "corpus_vectors.npy", np.ones((3, 2), np.float32) + shift)
        (d / "results.json").write_text(json.dumps({"ndcg_at_10": 0.5 + shift, "latency_ms_p50": random.random()}))
    roots = (str(tmp_path / "reference"), str(tmp_path / "drill"))
    ref, drill = tmp_path / "reference" / "chunk-abc", tmp_path / "drill" / "chunk-abc"
    exact = compare_stage("chunk", ref, drill, "exact", roots)
    assert {c.path for c in exact.failures()} == {"corpus_vectors.npy", "results.json"}
    loose = compare_stage("chunk", ref, drill, "tolerance", roots, atol=0.01, vector_atol=0.01)
    assert loose.ok, loose.failures()


def test_normalize_and_order_defined_hash() -> None:
    assert normalize({"a": "/r/x/y", "seconds": 3, "hnsw_search_ms_p50": 1, "n": [1]}, ("/r/x",)) == {"a": "<run>/y", "n": [1]}
    t = pa.Table.from_pylist(ROWS)
    ordered, unordered = table_hashes(t)
    ordered_rev, unordered_rev = table_hashes(pa.Table.from_pylist(ROWS[::-1]))
    assert ordered != ordered_rev and unordered == unordered_rev


def test_schedule_hits_every_stage_and_follows_durations() -> None:
    durations = {"ingest": 0.3, "chunk": 0.3, "generate": 60.0, "train": 30.0}
    targets = schedule(durations, 20, random.Random(0))
    stages = [s for s, _ in targets]
    assert len(targets) == 20 and set(stages) == set(durations)
    assert stages == sorted(stages, key=list(durations).index)  # in stage order
    assert stages.count("generate") > stages.count("train") > stages.count("chunk") == 1
    assert all(0 <= f < 0.9 for _, f in targets)  # fractions of the stage's duration, within the window
    assert [s for s, _ in schedule(durations, 2, random.Random(0))] == ["generate", "train"]
    assert schedule(durations, 20, random.Random(0)) == targets  # seeded
