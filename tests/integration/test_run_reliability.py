"""Runs under bad input, with the real runner, ingest and chunk stages: outputs stay inside run_dir, any edited
input byte re-runs the stages that read it, failures are recorded and leave no empty directories, and manifests
keep every attempt's time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedforge.data.shards import iter_shards
from embedforge.runner import plan, run_job, status
from embedforge.spec import SpecError, validate_dict
from embedforge.stages.base import StageFailed


def _job(tmp_path: Path, sources: list[dict], **extra) -> dict:
    return {"name": "t", "run_dir": str(tmp_path / "runs"),
            "stages": {"ingest": {"sources": sources, "max_bad_share": 0.5, **extra}, "chunk": {"max_tokens": 64}}}


# ---------------------------------------------------------------- path escapes


@pytest.mark.parametrize("name", ["..", ".", "../up", "a/b", ".hidden", "-x", ""])
def test_job_name_must_be_a_safe_slug(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecError, match="name"):
        validate_dict({**_job(tmp_path, [{"path": "x.jsonl"}]), "name": name})


def test_stage_output_through_a_symlink_out_of_run_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "t").symlink_to(outside, target_is_directory=True)  # the job dir points out of run_dir
    job = validate_dict(_job(tmp_path, [{"path": "builtin:adi"}]))
    with pytest.raises(SpecError, match="outside run_dir"):
        plan(job)
    with pytest.raises(SpecError, match="outside run_dir"):
        run_job(job)
    assert not any(outside.iterdir())  # nothing written there


def test_run_dir_up_the_tree_still_keeps_outputs_under_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    job = validate_dict({**_job(tmp_path, [{"path": "builtin:adi"}]), "run_dir": "../.."})
    for out in plan(job).values():  # run_dir is the user's choice; the job's outputs stay inside it
        assert out.dir.resolve().is_relative_to(tmp_path.resolve()) and out.dir.parent.name == "t"


@pytest.mark.parametrize("glob", ["../*.txt", "/etc/*", "sub/../../*", "~/x", ".", "./", ""])
def test_glob_leaving_the_folder_is_a_spec_error(tmp_path: Path, glob: str) -> None:
    with pytest.raises(SpecError, match="glob"):
        validate_dict(_job(tmp_path, [{"path": str(tmp_path), "glob": glob}]))


def test_symlinked_file_out_of_a_folder_source_is_quarantined_not_read(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("A document inside the folder, with enough words to keep.")
    (folder / "b.txt").write_text("Another document inside the folder.")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET outside the folder")
    (folder / "leak.txt").symlink_to(secret)
    run_job(validate_dict(_job(tmp_path, [{"path": str(folder)}])), ["ingest"])
    out = plan(validate_dict(_job(tmp_path, [{"path": str(folder)}])))["ingest"].dir
    texts = [t for _, table in iter_shards(out) for t in table.column("text").to_pylist()]
    assert len(texts) == 2 and not any("SECRET" in t for t in texts)
    quarantine = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [q["kind"] for q in quarantine] == ["outside the source folder"]


# ---------------------------------------------------------------- stale outputs


def test_mid_file_same_length_one_byte_edit_reruns_ingest_and_downstream(tmp_path: Path) -> None:
    corpus = tmp_path / "big.jsonl"
    pad = "p" * 60_000  # ~3 MiB in all, so the edit sits far from the first and last MiB
    rows = [{"_id": str(i), "text": f"Document {i} is about topic {i % 7}.", "pad": pad} for i in range(50)]
    rows[25]["text"] = "The middle document says ALPHA here."
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    size = corpus.stat().st_size
    spec = _job(tmp_path, [{"path": str(corpus)}])
    first = run_job(validate_dict(spec))
    before = plan(validate_dict(spec))
    data = bytearray(corpus.read_bytes())
    at = data.index(b"ALPHA")
    assert (1 << 20) < at < size - (1 << 20)  # outside the first and last MiB the old fingerprint read
    data[at] = ord("B")  # ALPHA -> BLPHA: same length, one byte, mid-file
    corpus.write_bytes(bytes(data))
    after = plan(validate_dict(spec))
    assert after["ingest"].hash != before["ingest"].hash and after["chunk"].hash != before["chunk"].hash
    second = run_job(validate_dict(spec))
    assert second["ingest"]["hash"] != first["ingest"]["hash"]
    chunks = pq.read_table(sorted((after["chunk"].dir / "shards").glob("*.parquet"))[0]).column("text").to_pylist()
    assert any("BLPHA" in c for c in chunks) and not any("ALPHA" in c for c in chunks)


def test_evaluate_dataset_edit_changes_the_evaluate_hash(tmp_path: Path, adi_dir: Path) -> None:
    import shutil

    data = tmp_path / "adi"
    shutil.copytree(adi_dir, data)
    spec = {"name": "t", "run_dir": str(tmp_path / "runs"), "stages": {"evaluate": {"datasets": [str(data)]}}}
    before = plan(validate_dict(spec))["evaluate"].hash
    qrels = next((data / "qrels").glob("*.tsv"))
    text = qrels.read_bytes()
    qrels.write_bytes(text[:-2] + (b"0" if text[-2:-1] != b"0" else b"2") + text[-1:])
    assert plan(validate_dict(spec))["evaluate"].hash != before


# ---------------------------------------------------------------- failures, status, timings


def test_failed_stage_leaves_no_empty_dir_and_status_says_failed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\nnor this\n")
    spec = validate_dict(_job(tmp_path, [{"path": str(bad)}]))
    with pytest.raises(StageFailed, match="no usable documents"):
        run_job(spec)
    rows = {r["stage"]: r for r in status(spec)}
    assert rows["ingest"]["state"] == "failed" and "no usable documents" in rows["ingest"]["error"]
    assert rows["chunk"]["state"] == "missing" and not plan(spec)["chunk"].dir.exists()
    for d in (tmp_path / "runs" / "t").iterdir():  # whatever remains holds files
        assert not d.is_dir() or any(p.is_file() for p in d.rglob("*")), d


def test_failure_before_any_output_removes_the_stage_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "1", "text": "one document"}\n')
    spec = validate_dict(_job(tmp_path, [{"path": str(corpus)}]))
    run_job(spec, ["ingest"])

    def boom(ctx) -> None:  # noqa: ANN001
        raise StageFailed("chunk: the tokenizer broke")

    monkeypatch.setattr("embedforge.stages.chunk.run", boom)
    with pytest.raises(StageFailed):
        run_job(spec)
    out = plan(spec)["chunk"]
    assert not out.dir.exists()
    assert {r["stage"]: r["state"] for r in status(spec)} == {"ingest": "done", "chunk": "failed"}


def test_manifest_keeps_total_and_per_attempt_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": f"doc {i} text"}) + "\n" for i in range(30)))
    spec = validate_dict(_job(tmp_path, [{"path": str(corpus)}], shard_rows=10))
    out = plan(spec)["ingest"]
    from embedforge.stages import ingest as ingest_stage

    real_run = ingest_stage.run

    def killed_after_a_shard(ctx) -> None:  # noqa: ANN001 - a crash after the first shard was committed
        real_run(ctx)
        for extra in sorted((ctx.out_dir / "shards").glob("*.parquet"))[1:]:
            extra.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_stage, "run", killed_after_a_shard)
    with pytest.raises(KeyboardInterrupt):
        run_job(spec, ["ingest"])
    monkeypatch.setattr(ingest_stage, "run", real_run)
    manifest = run_job(spec, ["ingest"])["ingest"]
    attempts = manifest["timings"]["attempts"]
    assert [a["ended"] for a in attempts] == ["failed: KeyboardInterrupt", "done"]
    assert manifest["timings"]["seconds"] == pytest.approx(sum(a["seconds"] for a in attempts), abs=0.01)
    assert manifest["timings"]["seconds_last_attempt"] == attempts[-1]["seconds"]
    assert manifest["rows_out"] == 30 and not (out.dir / "_attempts.jsonl").exists()


def test_sigkilled_attempt_is_timed_to_its_last_write(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "1", "text": "one document"}\n')
    spec = validate_dict(_job(tmp_path, [{"path": str(corpus)}]))
    out = plan(spec)["ingest"].dir
    (out / "stats").mkdir(parents=True)
    (out / "stats" / "partial.json").write_text("{}")  # what the killed attempt wrote
    start = os.path.getmtime(out / "stats" / "partial.json") - 5.0
    (out / "_attempts.jsonl").write_text(json.dumps({"start": start}) + "\n")  # it started, never ended
    manifest = run_job(spec, ["ingest"])["ingest"]
    killed = manifest["timings"]["attempts"][0]
    assert killed["ended"] == "killed" and killed["seconds"] == pytest.approx(5.0, abs=0.01)


# ---------------------------------------------------------------- inputs and reasons


def test_single_text_file_source_and_title_only_records(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("A single plain text file is one document.")
    titles = tmp_path / "titles.jsonl"
    titles.write_text(json.dumps({"_id": "t1", "title": "Only a title here"}) + "\n"
                      + json.dumps({"_id": "t2", "title": "", "text": ""}) + "\n"
                      + json.dumps({"_id": "t3", "title": "Title", "text": "and text"}) + "\n")
    spec = validate_dict(_job(tmp_path, [{"path": str(note)}, {"path": str(titles)}]))
    results = run_job(spec)
    out = plan(spec)
    docs = {r["doc_id"]: r for _, t in iter_shards(out["ingest"].dir) for r in t.to_pylist()}
    assert docs["note.txt"]["text"] == "A single plain text file is one document."
    assert docs["t1"]["title"] == "Only a title here" and docs["t1"]["text"] == ""
    assert "t2" not in docs and results["ingest"]["quarantined"] == 1  # title and text both empty
    chunks = {r["doc_id"]: r for _, t in iter_shards(out["chunk"].dir) for r in t.to_pylist()}
    assert chunks["t1"]["title"] == "Only a title here" and chunks["t1"]["n_tokens"] > 2


def test_symlink_loop_source_says_so(tmp_path: Path) -> None:
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    spec = validate_dict(_job(tmp_path, [{"path": str(loop)}]))
    with pytest.raises(SpecError, match="symbolic link that loops"):
        run_job(spec)


def test_quarantine_reasons_grouped_by_kind_offsets_kept_per_row(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    good = [json.dumps({"_id": str(i), "text": f"good document {i}"}).encode() for i in range(10)]
    bad = [b'{"_id": "b1", "text": "x\xff"}', b'{"_id": "b2", "text": "longer prefix \xfe"}']
    corpus.write_bytes(b"\n".join(good + bad) + b"\n")
    manifest = run_job(validate_dict(_job(tmp_path, [{"path": str(corpus)}])), ["ingest"])["ingest"]
    assert manifest["reasons"] == {"invalid UTF-8": 2}
    rows = [json.loads(x) for x in (plan(validate_dict(_job(tmp_path, [{"path": str(corpus)}])))["ingest"].dir
                                    / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(r["byte_offset"] for r in rows) == [bad[0].index(b"\xff"), bad[1].index(b"\xfe")]
    assert {r["reason"] for r in rows} == {f"invalid UTF-8 at byte {r['byte_offset']}" for r in rows}


def test_long_unspaced_word_is_cut_and_counted(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "w", "text": "Start. " + "z" * 200_000 + " end."}) + "\n")
    spec = validate_dict(_job(tmp_path, [{"path": str(corpus)}]))
    manifest = run_job(spec)["chunk"]
    chunks = [r for _, t in iter_shards(plan(spec)["chunk"].dir) for r in t.to_pylist()]
    assert max(len(c["text"]) for c in chunks) <= manifest["max_chars_effective"] == 16 * 64
    assert "".join(c["text"] for c in chunks).count("z") == 200_000  # nothing lost, just cut
    assert manifest["counts"]["long_words_split"] == 1 and manifest["counts"]["long_word_chars"] == 200_000


def test_edits_to_other_inputs_change_their_stage_hash(tmp_path: Path, minilm_path: Path) -> None:
    """embed's path input, mine's queries, and a base model given as a local directory are content-hashed too."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(minilm_path, model)
    passages = tmp_path / "passages.jsonl"
    passages.write_text('{"id": "1", "text": "a passage"}\n')
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q", "text": "a query"}\n')
    spec = {"name": "t", "run_dir": str(tmp_path / "runs"), "base_model": str(model),
            "stages": {"chunk": {}, "embed": {"input": str(passages)}}}
    before = plan(validate_dict(spec))
    passages.write_text('{"id": "1", "text": "b passage"}\n')
    after = plan(validate_dict(spec))
    assert after["embed"].hash != before["embed"].hash and after["chunk"].hash == before["chunk"].hash
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "note": "edited"}))
    edited = plan(validate_dict(spec))
    assert edited["chunk"].hash != after["chunk"].hash  # the base model's files changed
    from embedforge.configs.mine import MineConfig

    first = MineConfig(queries_path=str(queries)).input_fingerprint()
    queries.write_text('{"_id": "q", "text": "b query"}\n')
    assert MineConfig(queries_path=str(queries)).input_fingerprint() != first
