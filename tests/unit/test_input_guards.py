"""The small guards behind the reliability guarantees: content fingerprints, device strings, model dimensions
from config files, and chunks bounded in characters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedforge.data import fingerprint
from embedforge.data.chunking import ChunkStats, TokenCounter, chunk_text
from embedforge.device import check_device_string
from embedforge.preflight import model_dimension


def test_any_byte_changes_the_file_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = bytearray(os.urandom(3 << 20))
    path.write_bytes(bytes(data))
    seen = {fingerprint.file_fingerprint(path)}
    for at in (0, len(data) // 2, len(data) - 1):
        data[at] ^= 1
        path.write_bytes(bytes(data))
        os.utime(path, ns=(0, 10**9 * (at + 7)))  # mtime changes with every write here; force it to
        seen.add(fingerprint.file_fingerprint(path))
    assert len(seen) == 4


def test_fingerprint_memo_follows_mtime_and_size(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("abc")
    first = fingerprint.file_fingerprint(path)
    path.write_text("abd")
    os.utime(path, ns=(0, 123_456_789))
    assert fingerprint.file_fingerprint(path) != first


def test_tree_fingerprint_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("same")
    before = fingerprint.tree_fingerprint(tmp_path)
    (tmp_path / "a" / "x.txt").rename(tmp_path / "a" / "y.txt")
    assert fingerprint.tree_fingerprint(tmp_path) != before
    assert fingerprint.path_fingerprint(str(tmp_path / "nope")) == f"missing:{tmp_path / 'nope'}"


def test_object_store_fingerprint_uses_the_store_checksum_and_size() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/fp/corpus.jsonl", b'{"_id": "1", "text": "a"}\n')
    first = fingerprint.store_fingerprint("memory://fp/corpus.jsonl")
    assert first.startswith("26:")
    fs.pipe("/fp/corpus.jsonl", b'{"_id": "1", "text": "b"}\n')
    assert fingerprint.store_fingerprint("memory://fp/corpus.jsonl") != first


@pytest.mark.parametrize(("value", "ok"), [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"), ("cuda:3", "cuda:3"),
                                           ("tpu9", None), ("cuda:-1", None), ("gpu", None), ("", None),
                                           ("cuda:0,1", None)])
def test_device_strings(value: str, ok: str | None) -> None:
    if ok is None:
        with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
            check_device_string(value)
    else:
        assert check_device_string(value) == ok


def test_model_dimension_from_config_files(minilm_path: Path, tmp_path: Path) -> None:
    assert model_dimension(minilm_path) == 384
    (tmp_path / "config.json").write_text('{"hidden_size": 768}')
    assert model_dimension(tmp_path) == 768
    assert model_dimension(tmp_path / "missing") is None


@pytest.fixture(scope="module")
def counter(minilm_path: Path) -> TokenCounter:
    return TokenCounter(minilm_path)


def test_unspaced_megabyte_is_bounded_in_characters(counter: TokenCounter) -> None:
    text = "Intro sentence. " + "q" * 100_000 + " tail words."
    stats = ChunkStats()
    chunks = chunk_text(text, counter, max_tokens=128, max_chars=2048, stats=stats)
    assert len(chunks) >= 100_000 // 2048
    assert all(c.end - c.start <= 2048 and c.n_tokens <= 128 for c in chunks)
    assert "".join(text[c.start:c.end] for c in chunks).replace(" ", "") == text.replace(" ", "")
    assert stats.long_words_split == 1 and stats.long_word_chars == 100_000


def test_words_of_normal_length_are_never_cut(counter: TokenCounter) -> None:
    text = " ".join(["pneumonoultramicroscopicsilicovolcanoconiosis"] * 300)
    chunks = chunk_text(text, counter, max_tokens=64, max_chars=400, stats=(stats := ChunkStats()))
    assert stats.long_words_split == 0
    for c in chunks:
        piece = text[c.start:c.end]
        assert len(piece) <= 400 and set(piece.split(" ")) == {"pneumonoultramicroscopicsilicovolcanoconiosis"}


def test_beir_corpus_title_only_rows_are_documents(tmp_path: Path) -> None:
    from embedforge.data.beir import BeirFormatError, load_beir

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "Only a title"}\n{"_id": "d2", "text": "body"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    data = load_beir(tmp_path)
    assert data.corpus_texts == ["Only a title", "body"]
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": ""}\n')  # both empty: still refused
    with pytest.raises(BeirFormatError, match="corpus.jsonl:1"):
        load_beir(tmp_path)
