"""The job's held-out split as a retrieval dataset: ``val`` queries of the generate stage against the chunk
corpus, each query's one relevant document being the chunk it was generated from."""

from __future__ import annotations

from pathlib import Path

from embedforge.data.beir import BeirDataset
from embedforge.data.schemas import passage_text
from embedforge.data.shards import read_table


def heldout_dataset(chunk_dir: str | Path, generate_dir: str | Path, split: str = "val",
                    name: str = "heldout") -> tuple[BeirDataset, dict[str, int]]:
    """``(dataset, counts)``; counts say how many ``split`` queries were used and why others were not."""
    chunks = read_table(chunk_dir, columns=["chunk_id", "title", "text"]).to_pydict()
    queries = read_table(generate_dir, columns=["query_id", "chunk_id", "query", "split"]).to_pydict()
    known = set(chunks["chunk_id"])
    counts = {"heldout_queries": 0, "heldout_unknown_chunk": 0, "heldout_empty_query": 0,
              "heldout_duplicate_id": 0}
    qids: list[str] = []
    texts: list[str] = []
    qrels: dict[str, dict[str, int]] = {}
    for qid, chunk_id, text, part in zip(queries["query_id"], queries["chunk_id"], queries["query"],
                                          queries["split"], strict=True):
        if part != split:
            continue
        if chunk_id not in known:
            counts["heldout_unknown_chunk"] += 1
        elif not (text or "").strip():
            counts["heldout_empty_query"] += 1
        elif qid in qrels:
            counts["heldout_duplicate_id"] += 1
        else:
            qids.append(qid)
            texts.append(text)
            qrels[qid] = {chunk_id: 1}
    counts["heldout_queries"] = len(qids)
    dataset = BeirDataset(
        name=name, corpus_ids=list(chunks["chunk_id"]),
        corpus_texts=[passage_text(t or "", x) for t, x in zip(chunks["title"], chunks["text"], strict=True)],
        query_ids=qids, query_texts=texts, qrels=qrels)
    return dataset, counts
