"""Hard-negative mining benchmark: our miner vs ``sentence_transformers.util.mine_hard_negatives`` on SciFact.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_mine.py                 # train claims + title queries
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_mine.py --queries train --max-queries 300   # quick

Corpus: SciFact chunked by our ``ingest`` + ``chunk`` stages (256 MiniLM tokens). Queries: the 809 SciFact train
claims (positives from ``qrels/train.tsv``: the first chunk of each relevant abstract; several per claim) and/or
one synthetic ``title`` query per document (its title → its first chunk). Base MiniLM embeddings are computed
once (cached under ``--work``) and given to both: ours directly, sentence-transformers through its own
``cache_folder`` files (the script checks it did not re-encode).

Same settings on both sides: range 0–``--range-max``, ``--num-negatives``, relative margin 0.05, top sampling,
faiss on (``use_faiss=True``), no same-document rule (ST does not know documents). Timed, wall clock, in the same
process and round: everything from (query, positive) pairs and the vectors *on disk* to the finished negatives
with their texts. Ours: loading the ``.npy`` vectors, grouping known positives, index build, search, rules,
output texts. ST: the ``mine_hard_negatives`` call alone (it loads its cache files, searches, filters and
returns a ``Dataset`` with the negative texts); building its input ``Dataset`` and reading its output rows into
the comparison dict are left out of its time. ``st_cache_hash_s`` reports the part of ST's time spent hashing
its inputs to find the cache files (a cost of handing it precomputed vectors). ``overlap`` = Σ|ours ∩ ST| /
Σ max(|ours|, |ST|) over unique queries (negatives compared by text). Peak RSS of each phase is VmHWM after a
reset. Prints a table; writes JSON rows (default ``benchmarks/results/bench_mine.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.data.datasets import require as require_dataset
from embedforge.data.shards import read_table
from embedforge.device import cpu_bf16_dot
from embedforge.encoding.encoder import get_encoder
from embedforge.mining.corpus import KnownPositives, load_mining_corpus, normalize_text, stable_keys
from embedforge.mining.negatives import NegativeRules, mine_block
from embedforge.runner import git_sha, library_versions, plan, run_job
from embedforge.search.index import auto_backend, build_index
from embedforge.spec import validate_dict

SCIFACT = require_dataset("scifact")  # embedforge datasets get scifact


def _hwm_reset() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _hwm_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scifact_chunks(work: Path) -> Path:
    """Run (or reuse) the ingest + chunk stages on SciFact; returns the chunk output dir."""
    job = validate_dict({"name": "bench_mine", "run_dir": str(work / "runs"), "device": "cpu", "stages": {
        "ingest": {"sources": [{"path": str(SCIFACT), "format": "beir"}]}, "chunk": {"max_tokens": 256}}})
    run_job(job)
    return plan(job)["chunk"].dir


def build_pairs(chunk_dir: Path, which: str, max_queries: int | None) -> list[tuple[str, str]]:
    """(query text, positive chunk id) pairs."""
    table = read_table(chunk_dir, columns=["chunk_id", "doc_id", "idx", "title"]).to_pylist()
    first = {c["doc_id"]: c for c in table if c["idx"] == 0}
    pairs: list[tuple[str, str]] = []
    if which in ("train", "both"):
        claims = {json.loads(line)["_id"]: json.loads(line)["text"] for line in open(SCIFACT / "queries.jsonl")}
        for line in list(open(SCIFACT / "qrels" / "train.tsv"))[1:]:
            q, d, _ = line.split("\t")
            if d in first:
                pairs.append((claims[q], first[d]["chunk_id"]))
    if which in ("titles", "both"):
        pairs += [(c["title"], c["chunk_id"]) for c in first.values() if c["title"]]
    if max_queries:
        keep = list(dict.fromkeys(q for q, _ in pairs))[:max_queries]
        pairs = [p for p in pairs if p[0] in set(keep)]
    return pairs


def cached_vectors(path: Path, texts: list[str], encoder: Any) -> Path:
    """The ``.npy`` file of ``texts``' vectors (encoded once)."""
    key = hashlib.sha256(("\n".join(texts) + encoder.model_id).encode()).hexdigest()[:16]
    file = path.with_name(f"{path.stem}-{key}.npy")
    if not file.is_file():
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file, encoder.encode(texts))
    return file


def run_ours(pairs, corpus, corpus_file: Path, query_file: Path, rules: NegativeRules, backend: str, block: int,
             stats: dict[str, Any]):
    """Our miner over (query, positive) pairs; returns {query: [negative texts]}."""
    corpus_vecs = np.load(corpus_file, mmap_mode="r")  # as the mine stage reads its corpus vectors
    query_vecs = np.load(query_file)
    texts = [q for q, _ in pairs]
    unique = list(dict.fromkeys(texts))  # one mining row per query text (its negatives are shared by its pairs)
    ukeys = stable_keys([normalize_text(t) for t in unique], "t:")
    key_of = dict(zip(unique, ukeys.tolist(), strict=True))
    known = KnownPositives.from_pairs(np.array([key_of[t] for t in texts], dtype=np.int64),
                                      corpus.rows([c for _, c in pairs]))
    index = build_index(corpus_vecs, backend)
    out: dict[str, list[str]] = {}
    for start in range(0, len(unique), block):
        qv = query_vecs[start:start + block]
        pos = known.lookup(ukeys[start:start + block])
        sel = mine_block(index, qv, pos, ukeys[start:start + block], corpus.keys, rules)
        flat = sel.ids[sel.ids >= 0]
        negs = corpus.take_texts(flat)
        ends = np.cumsum(sel.n_kept).tolist()
        for q, a, b in zip(unique[start:start + block], [0, *ends[:-1]], ends, strict=True):
            out[q] = negs[a:b]
    stats.update(backend=index.backend, bf16=index.bf16 is not None, certified_rows=index.certified_rows,
                 fallback_rows=index.fallback_rows)
    return out


def run_st(pairs, corpus_texts, model, args, cache: Path) -> tuple[dict[str, list[str]], float]:
    """ST's miner; returns ({query: [negative texts]}, seconds spent in the ``mine_hard_negatives`` call)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    dataset = Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    before = set(os.listdir(cache))
    t0 = time.perf_counter()
    result = mine_hard_negatives(dataset, model, corpus=corpus_texts, range_min=0, range_max=args.range_max,
                                 relative_margin=0.05, num_negatives=args.num_negatives, sampling_strategy="top",
                                 output_format="labeled-list", use_faiss=True, cache_folder=str(cache),
                                 verbose=False, batch_size=64)
    seconds = time.perf_counter() - t0
    if set(os.listdir(cache)) != before:
        raise RuntimeError("sentence-transformers re-encoded (its cache files did not match): timings are invalid")
    out: dict[str, list[str]] = {}
    for row in result:
        out[row["query"]] = row["positive"][1:]  # labeled-list: [positive, negatives...]
    return out, seconds


def st_cache_hash_seconds(model: Any, queries: list[str], corpus: list[str]) -> float:
    """What ``mine_hard_negatives(cache_folder=...)`` spends hashing its inputs to name the cache files."""
    name = model.model_card_data.base_model or ""
    t0 = time.perf_counter()
    for texts in (queries, corpus):
        hashlib.sha256(repr((name, None, None, texts)).encode(), usedforsecurity=False).hexdigest()
    return time.perf_counter() - t0


def write_st_cache(cache: Path, model: Any, queries: list[str], corpus: list[str], text_vec: dict[str, np.ndarray],
                   query_vec: dict[str, np.ndarray]) -> None:
    """Save our vectors under the file names ``mine_hard_negatives(cache_folder=...)`` looks for."""
    name = model.model_card_data.base_model or ""
    qh = hashlib.sha256(repr((name, None, None, queries)).encode(), usedforsecurity=False).hexdigest()
    ch = hashlib.sha256(repr((name, None, None, corpus)).encode(), usedforsecurity=False).hexdigest()
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / f"query_embeddings_{qh}.npy", np.stack([query_vec[q] for q in queries]))
    np.save(cache / f"corpus_embeddings_{ch}.npy", np.stack([text_vec[t] for t in corpus]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", choices=["train", "titles", "both"], default="both")
    parser.add_argument("--max-queries", type=int, default=None, help="unique query texts (default: all)")
    parser.add_argument("--num-negatives", type=int, default=5)
    parser.add_argument("--range-max", type=int, default=50)
    parser.add_argument("--block", type=int, default=4096, help="our query block")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (best is reported)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_mine"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_mine.json"))
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    chunk_dir = scifact_chunks(args.work)
    corpus = load_mining_corpus(chunk_dir)
    pairs_by_id = build_pairs(chunk_dir, args.queries, args.max_queries)
    encoder = get_encoder("all-MiniLM-L6-v2", device="cpu")
    corpus_texts = corpus.take_texts(np.arange(len(corpus)))
    corpus_file = cached_vectors(args.work / "corpus.npy", corpus_texts, encoder)
    corpus_vecs = np.load(corpus_file)
    unique = list(dict.fromkeys(q for q, _ in pairs_by_id))
    query_file = cached_vectors(args.work / "queries.npy", unique, encoder)
    query_vecs = np.load(query_file)
    qvec = dict(zip(unique, query_vecs, strict=True))
    rules = NegativeRules(num_negatives=args.num_negatives, range_max=args.range_max, relative_margin=0.05,
                          sampling="top", exclude_same_doc=False, exclude_equal_text=True)

    # sentence-transformers works on texts: positives as passage texts, our vectors in its cache files
    text_of = dict(zip(corpus.take_ids(np.arange(len(corpus))), corpus_texts, strict=True))
    st_pairs = [(q, text_of[c]) for q, c in pairs_by_id]
    text_vec: dict[str, np.ndarray] = {}
    for t, v in zip(corpus_texts, corpus_vecs, strict=True):
        text_vec.setdefault(t, v)
    st_corpus = list(dict.fromkeys(corpus_texts + [p for _, p in st_pairs]))
    st_queries = list(dict.fromkeys(q for q, _ in st_pairs))
    model = SentenceTransformer(str(encoder.path), device="cpu")
    cache = args.work / "st_cache"
    write_st_cache(cache, model, st_queries, st_corpus, text_vec, qvec)

    rows: list[dict[str, Any]] = []
    results: dict[str, dict[str, list[str]]] = {}
    timings: dict[str, list[float]] = {"ours_faiss": [], "ours_torch": [], "st": []}
    peaks: dict[str, float] = {}
    search_stats: dict[str, dict[str, Any]] = {"ours_faiss": {}, "ours_torch": {}}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name in timings:
            _hwm_reset()
            base = _hwm_mib()
            if name == "st":
                got, seconds = run_st(st_pairs, corpus_texts, model, args, cache)
            else:
                t0 = time.perf_counter()
                got = run_ours(pairs_by_id, corpus, corpus_file, query_file, rules, name.split("_")[1], args.block,
                               search_stats[name])
                seconds = time.perf_counter() - t0
            timings[name].append(seconds)
            peaks[name] = max(peaks.get(name, 0.0), _hwm_mib() - base)
            results[name] = got
    load_after = os.getloadavg()
    st = results["st"]
    assert results["ours_faiss"] == results["ours_torch"], "faiss and torch paths disagree"
    inter = union = 0
    for q in unique:
        a, b = set(results["ours_faiss"].get(q, [])), set(st.get(q, []))
        inter += len(a & b)
        union += max(len(a), len(b))
    overlap = inter / max(union, 1)
    best = {k: min(v) for k, v in timings.items()}
    default = f"ours_{auto_backend('flat')}"  # what the mine stage uses here (backend: auto)
    row = {"benchmark": "mine", "queries": args.queries, "unique_queries": len(unique), "pairs": len(pairs_by_id),
           "corpus_chunks": len(corpus), "num_negatives": args.num_negatives, "range_max": args.range_max,
           "relative_margin": 0.05, "ours_faiss_s": round(best["ours_faiss"], 3),
           "ours_torch_s": round(best["ours_torch"], 3), "st_s": round(best["st"], 3),
           "default_backend": default.removeprefix("ours_"), "speedup_vs_st": round(best["st"] / best[default], 2),
           "speedup_faiss_vs_st": round(best["st"] / best["ours_faiss"], 2),
           "speedup_torch_vs_st": round(best["st"] / best["ours_torch"], 2), "overlap": round(overlap, 4),
           "negatives_ours": sum(len(v) for v in results["ours_faiss"].values()),
           "negatives_st": sum(len(v) for v in st.values()),
           "peak_rss_delta_mib": {k: round(v, 1) for k, v in peaks.items()}, "peak_rss_mib": round(_peak_rss(), 1),
           "search": search_stats, "st_cache_hash_s": round(st_cache_hash_seconds(model, st_queries, st_corpus), 3),
           "all_runs_s": {k: [round(x, 3) for x in v] for k, v in timings.items()},
           "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
           "cpu_bf16_dot": cpu_bf16_dot(), "repeats": args.repeats, "device": "cpu", "threads": os.environ.get("OMP_NUM_THREADS"),
           "quiet_machine": max(load_before[0], load_after[0]) < 1.5, "versions": library_versions(), "git": git_sha(),
           "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}
    rows.append(row)
    print(f"{'miner':<22}{'seconds':>10}{'peak RSS Δ MiB':>16}")
    for name, label in (("ours_faiss", "embedforge (faiss)"), ("ours_torch", "embedforge (torch)"),
                        ("st", "sentence-transformers")):
        print(f"{label:<22}{best[name]:>10.3f}{peaks[name]:>16.1f}")
    print(f"queries {len(unique)} (pairs {len(pairs_by_id)}), corpus {len(corpus)} chunks; speedup_vs_st "
          f"{row['speedup_vs_st']}x (default backend {row['default_backend']}; faiss {row['speedup_faiss_vs_st']}x, "
          f"torch {row['speedup_torch_vs_st']}x); overlap {overlap:.4f}; negatives "
          f"ours {row['negatives_ours']} vs st {row['negatives_st']}; torch path: {search_stats['ours_torch']}; "
          f"load average before {row['loadavg_before']} after {row['loadavg_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")


def _peak_rss() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
