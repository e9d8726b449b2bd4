"""BEIR directories: corpus.jsonl, queries.jsonl, qrels/<split>.tsv — loaded with errors that name file and line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from embedforge.data.ingest import resolve_path
from embedforge.data.schemas import passage_text


class BeirFormatError(ValueError):
    """A malformed BEIR file; the message names the file and line."""


@dataclass
class BeirDataset:
    """A BEIR collection restricted to the judged queries of one split."""

    name: str
    corpus_ids: list[str]
    corpus_texts: list[str]
    """``title + " " + text`` per document (BEIR's convention)."""
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    """query id → {doc id → graded relevance}; only judged queries."""
    corpus_titles: list[str] | None = None
    """Title per document, kept apart from its body so a long document can be split into passages that each carry
    the title (:func:`embedforge.data.chunking.passages`); None: the titles are inside ``corpus_texts``."""
    corpus_bodies: list[str] | None = None
    """Text per document without its title (None with ``corpus_titles``)."""


def _read_jsonl(path: Path, title_only_ok: bool = False) -> list[dict]:
    """Rows with ``_id`` and a string ``text``; with ``title_only_ok`` (the corpus) a row with a title and no
    text is a document too (its content is its title)."""
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BeirFormatError(f"{path}:{lineno}: not a valid JSON line ({exc})") from None
            if not isinstance(obj, dict) or "_id" not in obj:
                raise BeirFormatError(f"{path}:{lineno}: expected an object with '_id' and a string 'text'")
            text, title = obj.get("text"), obj.get("title")
            if text is None and title_only_ok and isinstance(title, str) and title.strip():
                obj["text"] = ""
            elif not isinstance(text, str):
                raise BeirFormatError(f"{path}:{lineno}: expected an object with '_id' and a string 'text'"
                                      f"{' (or a title)' if title_only_ok else ''}")
            rows.append(obj)
    return rows


def _is_header(line: str) -> bool:
    """A qrels file's first line is a header when its last field is not a number (``query-id corpus-id score``)."""
    return not line.rstrip("\n").split("\t")[-1].lstrip("-").isdigit()


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``query-id  corpus-id  score`` TSV with a header line; graded scores kept; score ≤ 0 dropped."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and _is_header(line):
                continue
            if not line.strip():
                continue
            if len(parts) != 3:
                raise BeirFormatError(f"{path}:{lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(parts)}")
            try:
                score = int(float(parts[2]))
            except ValueError:
                raise BeirFormatError(f"{path}:{lineno}: score '{parts[2]}' is not a number") from None
            if score > 0:
                qrels.setdefault(parts[0], {})[parts[1]] = score
    if not qrels:
        raise BeirFormatError(f"{path}: no positive judgements")
    return qrels


def load_beir(directory: str | Path, split: str = "test") -> BeirDataset:
    """Load a BEIR directory; only queries present in ``qrels/<split>.tsv`` are kept."""
    root = resolve_path(str(directory))
    if not (root / "corpus.jsonl").is_file():
        raise BeirFormatError(f"{root}: missing corpus.jsonl (BEIR layout: corpus.jsonl, queries.jsonl, qrels/{split}.tsv)")
    corpus = _read_jsonl(root / "corpus.jsonl", title_only_ok=True)
    queries, qrels = load_judged(root, split)
    qids = list(queries)
    return BeirDataset(
        name=root.name,
        corpus_ids=[str(d["_id"]) for d in corpus],
        corpus_texts=[passage_text(d.get("title") or "", d["text"]) for d in corpus],
        query_ids=qids,
        query_texts=[queries[q] for q in qids],
        qrels={q: qrels[q] for q in qids},
        corpus_titles=[d.get("title") or "" for d in corpus],
        corpus_bodies=[d["text"] for d in corpus],
    )


def load_judged(directory: str | Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The judged queries of one split without the corpus: ``({query id: text}, {query id: {doc id: grade}})``.

    For a job whose corpus was ingested from elsewhere (the corpus ids in the qrels must be the ingested doc ids).
    """
    root = resolve_path(str(directory))
    for need in ("queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / need).is_file():
            raise BeirFormatError(f"{root}: missing {need} (BEIR layout: queries.jsonl, qrels/{split}.tsv)")
    qrels = load_qrels(root / "qrels" / f"{split}.tsv")
    queries = {str(q["_id"]): q["text"] for q in _read_jsonl(root / "queries.jsonl") if str(q["_id"]) in qrels}
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise BeirFormatError(f"{root / 'qrels' / (split + '.tsv')}: {len(missing)} judged queries are not in "
                              f"queries.jsonl (first: {missing[0]})")
    return queries, qrels


def split_judged(directory: str | Path, split: str = "test", dev_share: float = 0.5,
                 seed: int = 0) -> dict[str, int | str]:
    """Divide the judged queries of ``qrels/<split>.tsv`` into ``qrels/<split>-dev.tsv`` (``dev_share`` of them)
    and ``qrels/<split>-heldout.tsv`` (the rest), for a user with one set of judgements: the dev part chooses the
    checkpoint (``train.judged_split``), the held-out part measures the result (``evaluate.split``).

    A query goes to dev when its seeded blake2b rank is among the first ``round(dev_share · n)``, so the division
    depends only on the query ids and the seed (not on file order). The lines are copied unchanged (a query's
    every judgement, zero grades included, goes with it); both files are written atomically.
    """
    import hashlib

    from embedforge.data.shards import atomic_write_text

    if not 0 < dev_share < 1:
        raise ValueError(f"dev_share must be between 0 and 1 (exclusive), got {dev_share}")
    root = resolve_path(str(directory))
    path = root / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise BeirFormatError(f"{root}: missing qrels/{split}.tsv (BEIR layout: qrels/<split>.tsv)")
    judged = sorted(load_qrels(path))  # checks the file; only queries with a positive judgement count
    if len(judged) < 2:
        raise BeirFormatError(f"{path}: {len(judged)} judged query; at least 2 are needed to split")
    rank = sorted(judged, key=lambda q: hashlib.blake2b(f"{seed}:{q}".encode(), digest_size=8).digest())
    n_dev = min(max(round(dev_share * len(judged)), 1), len(judged) - 1)
    dev = set(rank[:n_dev])
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[:1] if lines and _is_header(lines[0]) else []
    body = [line for line in lines[len(header):] if line.strip()]
    parts = {"dev": [line for line in body if line.split("\t")[0] in dev],
             "heldout": [line for line in body if line.split("\t")[0] not in dev]}
    for name, rows in parts.items():
        atomic_write_text(root / "qrels" / f"{split}-{name}.tsv", "\n".join(header + rows) + "\n")
    return {"dev_split": f"{split}-dev", "heldout_split": f"{split}-heldout", "dev_queries": n_dev,
            "heldout_queries": len(judged) - n_dev}
