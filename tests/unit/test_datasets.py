"""``embedforge datasets get``: a local copy (--from) or a download over real HTTP (127.0.0.1), checked before use,
then named ``beir:NAME`` by jobs, suites and ``load_beir``."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from embedforge.data import datasets
from embedforge.data.beir import load_beir
from embedforge.data.datasets import DatasetError, KnownDataset


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "datasets"
    monkeypatch.setenv("EMBEDFORGE_DATASETS", str(root))
    return root


def test_get_from_local_copy_then_jobs_name_it(cli, cache: Path, scifact_slice: Path) -> None:
    env = {"EMBEDFORGE_DATASETS": str(cache)}
    proc = cli("datasets", "get", "scifact-slice", "--from", str(scifact_slice), env=env)
    assert "218 documents, 10 judged test queries" in proc.stdout + proc.stderr
    copied = cache / "scifact-slice"
    assert (copied / "qrels" / "train.tsv").read_bytes() == (scifact_slice / "qrels" / "train.tsv").read_bytes()
    ds = load_beir("beir:scifact-slice")
    assert len(ds.corpus_ids) == 218 and len(ds.query_ids) == 10
    listed = cli("datasets", "list", env=env)
    listed = listed.stdout + listed.stderr
    assert "scifact-slice" in listed and "present" in listed


def test_local_copy_with_wrong_counts_is_refused(cli, cache: Path, cranfield_slice: Path) -> None:
    proc = cli("datasets", "get", "cranfield", "--from", str(cranfield_slice), env={"EMBEDFORGE_DATASETS": str(cache)},
               check=False)
    assert proc.returncode == 2
    assert "not a complete copy of cranfield: docs 124 (expected 1400)" in " ".join((proc.stdout + proc.stderr).split())
    assert "Traceback" not in proc.stderr
    assert not (cache / "cranfield").exists()


def test_missing_dataset_says_how_to_get_it(cache: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset 'scifact' is not in .*run: embedforge datasets get scifact$"):
        load_beir("beir:scifact")
    with pytest.raises(DatasetError, match=r"datasets get cranfield --from PATH"):
        datasets.resolve_dataset("beir:cranfield")


def _zip_of(directory: Path, name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zipped:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zipped.write(path, f"{name}/{path.relative_to(directory)}")
    return buf.getvalue()


@pytest.fixture
def server(cranfield_slice: Path):
    """A real HTTP server on 127.0.0.1 serving ``/tiny.zip`` (the Cranfield slice as BEIR zips it)."""
    payload = _zip_of(cranfield_slice, "tiny")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/tiny.zip":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/tiny.zip", payload
    httpd.shutdown()


def test_download_is_checked_against_the_published_checksums(cache: Path, server, monkeypatch) -> None:
    url, payload = server
    good = KnownDataset("tiny", 124, 12, 109, url, hashlib.sha256(payload).hexdigest(), hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(datasets.KNOWN, "tiny", KnownDataset(**{**good.__dict__, "sha256": "0" * 64}))
    with pytest.raises(DatasetError, match="sha256 .* is not the published 0000"):
        datasets.get("tiny")
    assert not (cache / "tiny").exists() and not list(cache.glob(".tiny-*"))  # nothing half-made is left

    monkeypatch.setitem(datasets.KNOWN, "tiny", good)
    target = datasets.get("beir:tiny")
    assert target == cache / "tiny"
    assert len(load_beir("beir:tiny").query_ids) == 12
    assert datasets.present()[0]["source"] == url

    monkeypatch.setitem(datasets.KNOWN, "tiny", KnownDataset(**{**good.__dict__, "docs": 125}))
    with pytest.raises(DatasetError, match=r"docs 124 \(expected 125\)"):
        datasets.get("tiny", force=True)
    assert (cache / "tiny" / datasets.MARKER).is_file()  # the good copy stays when a re-fetch fails


def test_write_beir_round_trips(tmp_path: Path, adi_dir: Path) -> None:
    ds = load_beir(adi_dir)
    back = load_beir(datasets.write_beir(ds, tmp_path / "adi-copy"))
    assert back.corpus_ids == ds.corpus_ids and back.corpus_texts == ds.corpus_texts
    assert back.query_ids == ds.query_ids and back.qrels == ds.qrels


def test_export_a_jobs_synthetic_queries_as_beir(cli, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "chunk").mkdir()
    (tmp_path / "generate").mkdir()
    pq.write_table(pa.table({"chunk_id": ["c1", "c2", "c3"], "title": ["Wings", "", "Flow"],
                             "text": ["lift on a wing", "drag of a body", "laminar flow"]}), tmp_path / "chunk" / "p.parquet")
    pq.write_table(pa.table({"query_id": ["q1", "q2", "q3", "q4"], "chunk_id": ["c1", "c2", "c3", "gone"],
                             "query": ["what makes lift", "body drag", "train only", "unknown chunk"],
                             "split": ["val", "val", "train", "val"]}), tmp_path / "generate" / "p.parquet")
    out = tmp_path / "beir"
    cli("datasets", "export", "--chunks", str(tmp_path / "chunk"), "--queries", str(tmp_path / "generate"), "-o", str(out))
    ds = load_beir(out)
    assert ds.query_ids == ["q1", "q2"] and ds.qrels == {"q1": {"c1": 1}, "q2": {"c2": 1}}
    assert ds.corpus_texts == ["Wings lift on a wing", "drag of a body", "Flow laminar flow"]
    bad = cli("datasets", "export", "--chunks", str(tmp_path / "nope"), "--queries", str(tmp_path / "generate"),
              "-o", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
