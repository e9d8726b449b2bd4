"""BEIR loading for evaluation: judged queries only, graded qrels (Cranfield), errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedforge.data.beir import BeirFormatError, load_beir


def _write_beir(root: Path, queries: str, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "t", "text": f"doc {i}"}) + "\n"
                                               for i in range(3)))
    (root / "queries.jsonl").write_text(queries)
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def test_cranfield_graded_qrels_and_judged_queries(cranfield_slice: Path) -> None:
    ds = load_beir(cranfield_slice)
    assert len(ds.corpus_ids) == 124
    assert len(ds.query_ids) == 12
    grades = {g for docs in ds.qrels.values() for g in docs.values()}
    assert grades == {1, 2, 3, 4}
    assert sum(len(d) for d in ds.qrels.values()) == 109
    assert set(ds.query_ids) == set(ds.qrels)


def test_scifact_keeps_only_test_judged_queries(scifact_slice: Path) -> None:
    ds = load_beir(scifact_slice)  # 230 claims in queries.jsonl: 220 judged in train.tsv, 10 in test.tsv
    assert len(ds.query_ids) == 10 and len(ds.corpus_ids) == 218
    assert len(ds.query_texts) == 10
    assert len(load_beir(scifact_slice, "train").query_ids) == 220


QUERY = '{"_id": "q1", "text": "x"}\n'
HEADER = "query-id\tcorpus-id\tscore\n"


@pytest.mark.parametrize(("queries", "qrels", "message"), [
    (QUERY, HEADER + "q1\td0\t1\nq1\td1\n", r"qrels/test\.tsv:3: expected 3 tab-separated fields"),
    (QUERY, HEADER + "q1\td0\thigh\n", r"test\.tsv:2: score 'high' is not a number"),
    (QUERY + '{"_id": "q2", "text": \n', HEADER + "q1\td0\t1\n", r"queries\.jsonl:2: not a valid JSON line"),
    ('{"_id": "q1"}\n', HEADER + "q1\td0\t1\n", r"queries\.jsonl:1: expected an object"),
    (QUERY, HEADER + "q7\td0\t1\n", "not in queries.jsonl"),
], ids=["malformed-qrels-line", "non-numeric-score", "malformed-query-line", "query-without-text",
        "judged-query-missing"])
def test_bad_input_is_named(tmp_path: Path, queries: str, qrels: str, message: str) -> None:
    """Each malformed file is refused with an error naming the file, the line and what is wrong."""
    root = _write_beir(tmp_path / "bad", queries, qrels)
    with pytest.raises(BeirFormatError, match=message):
        load_beir(root)
