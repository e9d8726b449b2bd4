"""Ingest: every format, cleaning, PII redaction, quarantine of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedforge.data import cleaning
from embedforge.data.shards import read_table
from embedforge.runner import run_job
from embedforge.spec import validate_dict
from embedforge.stages.base import StageFailed


def _run(tmp_path: Path, sources: list[dict], **ingest: object) -> tuple[pa.Table, dict]:
    spec = validate_dict({"name": "t", "run_dir": str(tmp_path / "runs"),
                          "stages": {"ingest": {"sources": sources, **ingest}}})
    manifest = run_job(spec)["ingest"]
    out = Path(next((tmp_path / "runs" / "t").glob("ingest-*")))
    return read_table(out), manifest


def test_beir_directory(tmp_path: Path, adi_dir: Path) -> None:
    table, manifest = _run(tmp_path, [{"path": str(adi_dir)}])
    assert table.num_rows == 82 and manifest["quarantined"] == 0
    row = table.slice(0, 1).to_pylist()[0]
    assert row["doc_id"] == "1" and row["title"].startswith("the ibm dsd") and row["source"].endswith("corpus.jsonl:1")
    assert row["doc_version"] == cleaning.content_hash(row["title"], row["text"])


def test_builtin_corpus(tmp_path: Path) -> None:
    table, _ = _run(tmp_path, [{"path": "builtin:adi"}])
    assert table.num_rows == 82


def test_parquet_and_jsonl_with_custom_fields(tmp_path: Path) -> None:
    pq.write_table(pa.table({"key": ["a", "b"], "body": ["alpha text", "beta text"], "extra": [1, 2]}), tmp_path / "d.parquet")
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "c", "text": "gamma", "title": "G"}) + "\n")
    table, _ = _run(tmp_path, [{"path": str(tmp_path / "d.parquet"), "id_field": "key", "text_field": "body",
                                "title_field": None}, {"path": str(tmp_path / "d.jsonl")}])
    rows = table.to_pylist()
    assert [r["doc_id"] for r in rows] == ["a", "b", "c"]
    assert json.loads(rows[0]["meta"]) == {"extra": 1} and rows[2]["title"] == "G"
    assert rows[1]["source"].endswith("d.parquet#1")


def test_folder_of_text_markdown_html(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Plain   text\n\n\n\nwith   paragraphs.")
    (folder / "b.md").write_text("# Heading One\n\nSome *markdown* body.")
    (folder / "c.html").write_text("<html><head><title>Page</title><script>var x=1;</script></head><body>"
                                   "<nav>Home | About</nav><p>Real content here.</p><footer>(c) 2026</footer></body></html>")
    (folder / "d.bin").write_bytes(b"\x00\x01")
    table, manifest = _run(tmp_path, [{"path": str(folder)}], max_bad_share=0.5)
    rows = {r["doc_id"]: r for r in table.to_pylist()}
    assert rows["a.txt"]["text"] == "Plain text\n\nwith paragraphs."
    assert rows["b.md"]["title"] == "Heading One"
    assert rows["c.html"]["title"] == "Page" and rows["c.html"]["text"] == "Real content here."
    assert manifest["quarantined"] == 1  # d.bin: unsupported type, counted not dropped


def test_bad_rows_are_quarantined_with_file_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps({"_id": str(i), "text": f"good document number {i}"}).encode() for i in range(200)]
    lines += [b'{"_id": "x1", "text": "broken', b'{"_id": "x2", "text": "bad \xff utf8"}',
              json.dumps({"_id": "x3", "note": "no text, no title"}).encode(), json.dumps({"_id": "x4", "text": "   "}).encode(),
              json.dumps({"_id": "1", "text": "other content for an existing id"}).encode(),
              json.dumps({"_id": "x5", "text": "y" * 500}).encode(),
              json.dumps({"_id": "dup", "text": "good document number 7"}).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    table, manifest = _run(tmp_path, [{"path": str(path)}], max_chars=400, max_bad_share=0.05)
    assert table.num_rows == 200  # the exact duplicate is removed, the 6 bad rows quarantined
    assert manifest["quarantined"] == 6 and manifest["counts"]["duplicates_removed"] == 1
    quarantine = [json.loads(x) for x in Path(next((tmp_path / "runs" / "t").glob("ingest-*")), "quarantine.jsonl").read_text().splitlines()]
    reasons = {q["source"].rsplit(":", 1)[1]: q["reason"] for q in quarantine}
    assert reasons["201"].startswith("malformed JSON") and reasons["202"].startswith("invalid UTF-8")
    assert reasons["203"] == "missing text field 'text' (and no title)" and reasons["204"] == "empty document after cleaning"
    assert "duplicate id '1'" in reasons["205"] and "size limit" in reasons["206"]


def test_too_much_bad_input_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "mostly_bad.jsonl"
    path.write_text('{"_id": "1", "text": "ok"}\nnot json\nnot json either\n')
    with pytest.raises(StageFailed, match=r"2 of 3 rows quarantined.*max_bad_share"):
        _run(tmp_path, [{"path": str(path)}])


def test_pii_redaction() -> None:
    text = ("Mail jane.doe@example.com or call +1 415-555-2671. Card 4111 1111 1111 1111, not 4111 1111 1111 1112. "
            "IBAN GB82 WEST 1234 5698 7654 32.")
    out, counts = cleaning.redact_pii(text)
    assert "[EMAIL]" in out and "[PHONE]" in out and "[CARD]" in out and "[IBAN]" in out
    assert "4111 1111 1111 1112" in out  # fails the Luhn check: not a card number
    assert counts == {"email": 1, "iban": 1, "card": 1, "phone": 1}
    assert cleaning.luhn_ok("79927398713") and not cleaning.luhn_ok("79927398710")
    assert cleaning.iban_ok("DE89 3704 0044 0532 0130 00") and not cleaning.iban_ok("DE89 3704 0044 0532 0130 01")


def test_normalization() -> None:
    assert cleaning.normalize_text("ﬁne\u00a0\u00a0text\r\n\r\n\r\nnext\tline ") == "fine text\n\nnext line"
