"""Bulk-embedding benchmark: our encoder vs ``SentenceTransformer.encode`` on SciFact chunks, plus memory.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_embed.py                      # full
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_embed.py --docs 300 --rss-sizes 2000,20000   # quick

Speed: SciFact documents (all judged test documents first, then the rest up to ``--docs``) are chunked at 256
MiniLM tokens with our chunker; passages are ``title + " " + chunk``. The chunks are processed in windows of
``--window``; in each window every contender encodes the same texts back to back (ST with batch 32, the
reference), so machine noise hits all of them alike. Reported per contender: docs/s (chunks/s),
``speedup_vs_st`` (ratio of total times) and ``min_cosine`` (per row, vs ST). Contenders: ``ours`` (the
default exact path: ``backend=auto``, fp32 → ONNX Runtime on CPU), ``ours-torch`` (fp32 eager), ``ours-bf16``
(torch bf16 autocast) and ``ours-int8`` (ORT dynamic int8). No cache anywhere.

Quality: nDCG@10 on the SciFact test queries over the same sub-corpus (a document scores as its best chunk),
for ST and each contender, with pytrec_eval. The sub-corpus makes absolute nDCG higher than on the full
corpus; the *change* between contenders is the figure of merit.

Memory: a subprocess per size embeds ``N`` generated short documents (~12 words each, to keep the run time
sane) from JSONL through the real bulk path (``embed_blocks``, 5,000-row shards) and reports its peak RSS
(``VmHWM``; ``ru_maxrss`` would include the forking parent's size);
flat means the 100k run peaks within 10% of the 10k run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.data.datasets import require as require_dataset
from embedforge.runner import git_sha, library_versions

REPO = Path(__file__).resolve().parents[1]

SCIFACT = require_dataset("scifact")  # embedforge datasets get scifact


def scifact_chunks(n_docs: int) -> tuple[list[str], list[str], dict[str, dict[str, int]], dict[str, str]]:
    """``(chunk texts, chunk → doc id, qrels of test queries, queries)`` over a judged-first sub-corpus."""
    from embedforge.data.beir import load_beir
    from embedforge.data.chunking import TokenCounter, chunk_text
    from embedforge.models import resolve_model

    beir = load_beir(SCIFACT)
    docs = {json.loads(line)["_id"]: json.loads(line) for line in open(SCIFACT / "corpus.jsonl")}
    judged = list(dict.fromkeys(d for rel in beir.qrels.values() for d in rel))
    chosen = judged + [d for d in docs if d not in set(judged)]
    chosen = chosen[:max(n_docs, len(judged))] if n_docs else chosen
    counter = TokenCounter(resolve_model("all-MiniLM-L6-v2"))
    texts, owners = [], []
    for doc_id in chosen:
        doc = docs[doc_id]
        for c in chunk_text(doc["text"], counter, 256, 0, 32, reserved_tokens=min(32, len(doc["title"]) // 4)):
            texts.append(f"{doc['title']} {doc['text'][c.start:c.end]}".strip())
            owners.append(doc_id)
    queries = dict(zip(beir.query_ids, beir.query_texts, strict=True))
    keep = set(chosen)
    qrels = {q: rel for q, rel in beir.qrels.items() if any(d in keep for d in rel)}
    return texts, owners, qrels, queries


def ndcg10(query_vecs: np.ndarray, qids: list[str], chunk_vecs: np.ndarray, owners: list[str],
           qrels: dict[str, dict[str, int]]) -> float:
    """nDCG@10 with documents scored by their best chunk (exact search through the one search API)."""
    import pytrec_eval

    from embedforge.search.index import search

    scores, ids = search(query_vecs, chunk_vecs, k=min(100, len(owners)))
    run: dict[str, dict[str, float]] = {}
    for q, row_s, row_i in zip(qids, scores, ids, strict=True):
        best: dict[str, float] = {}
        for s, i in zip(row_s, row_i, strict=True):
            best[owners[i]] = max(best.get(owners[i], -1e9), float(s))
        run[q] = best
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    return float(np.mean([v["ndcg_cut_10"] for v in evaluator.evaluate(run).values()]))


def speed_and_quality(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    from sentence_transformers import SentenceTransformer

    from embedforge.encoding.encoder import Encoder
    from embedforge.models import resolve_model

    torch.set_num_threads(args.threads)
    texts, owners, qrels, queries = scifact_chunks(args.docs)
    qids = list(qrels)
    path = resolve_model("all-MiniLM-L6-v2")
    st = SentenceTransformer(str(path), device="cpu")
    contenders: dict[str, Any] = {"st": lambda t: st.encode(t, batch_size=32, normalize_embeddings=True)}
    for name, backend, dtype in (("ours", "auto", "fp32"), ("ours-torch", "torch", "fp32"),
                                 ("ours-bf16", "torch", "bf16"), ("ours-int8", "onnx-int8", "fp32")):
        enc = Encoder(path, device="cpu", dtype=dtype, backend=backend)
        enc.encode(texts[:16])  # warm-up (and ONNX export, cached)
        contenders[name] = enc
    seconds = {k: 0.0 for k in contenders}
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in contenders}
    print(f"{len(texts)} chunks of {len(set(owners))} SciFact docs, windows of {args.window}", flush=True)
    for start in range(0, len(texts), args.window):
        window = texts[start:start + args.window]
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            outputs[name].append(fn(window) if name == "st" else fn.encode(window))
            seconds[name] += time.perf_counter() - t0
    ref = np.concatenate(outputs["st"])
    rows = []
    for name, fn in contenders.items():
        vectors = np.concatenate(outputs[name])
        qv = (st.encode([queries[q] for q in qids], normalize_embeddings=True) if name == "st"
              else fn.encode([queries[q] for q in qids]))
        rows.append({"name": name, "backend": "sentence-transformers" if name == "st" else fn.backend,
                     "docs": len(texts), "docs_per_s": round(len(texts) / seconds[name], 2),
                     "speedup_vs_st": round(seconds["st"] / seconds[name], 3),
                     "min_cosine": round(float((vectors * ref).sum(1).min()), 6),
                     "mean_cosine": round(float((vectors * ref).sum(1).mean()), 6),
                     "ndcg@10": round(ndcg10(qv, qids, vectors, owners, qrels), 4)})
    base = next(r for r in rows if r["name"] == "st")["ndcg@10"]
    for r in rows:
        r["ndcg@10_change_vs_st"] = round(r["ndcg@10"] - base, 4)
    return rows


def peak_rss_mib() -> float:
    """This process's peak RSS: ``VmHWM`` (ru_maxrss would include the forking parent's size, kept across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(n: int, threads: int) -> None:
    """Embed ``n`` generated docs through the bulk path; print peak RSS (MiB) as JSON."""
    import torch

    from embedforge.encoding.bulk_embed import OutputOptions, embed_blocks, iter_blocks
    from embedforge.encoding.encoder import Encoder

    torch.set_num_threads(threads)
    rng = random.Random(0)
    words = "protein cell gene wing flow heat pressure vitamin sleep river model data".split()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        with open(src, "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"id": f"g{i}", "text": " ".join(rng.choices(words, k=12))}) + "\n")
        enc = Encoder("all-MiniLM-L6-v2", device="cpu")
        t0 = time.perf_counter()
        totals = embed_blocks(enc, iter_blocks(src, "jsonl", 5000), Path(tmp) / "out", OutputOptions(dims=[384]),
                              cache=False)
        seconds = time.perf_counter() - t0
    peak = peak_rss_mib()
    print(json.dumps({"docs": n, "peak_rss_mib": round(peak, 1), "rows": totals["rows_embedded"],
                      "docs_per_s": round(n / seconds, 1)}))


def memory_rows(sizes: list[int], threads: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--threads", str(threads)],
                              capture_output=True, text=True, check=True)
        rows.append({"name": f"rss-{n}", **json.loads(proc.stdout.strip().splitlines()[-1])})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=0, help="SciFact docs (judged first; 0 = all 5,183)")
    parser.add_argument("--window", type=int, default=128, help="chunks per interleaved window")
    parser.add_argument("--rss-sizes", default="10000,100000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_embed.json")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.threads)
        return
    rows = [] if args.skip_speed else speed_and_quality(args)
    mem = memory_rows([int(s) for s in args.rss_sizes.split(",") if s], args.threads)
    if len(mem) >= 2:
        growth = mem[-1]["peak_rss_mib"] / mem[0]["peak_rss_mib"] - 1
        mem.append({"name": "rss-growth", "value": round(growth, 4), "flat_within_10pct": abs(growth) <= 0.10})
    rows += mem
    print(f"\n{'name':<12} {'backend':<22} {'docs/s':>8} {'speedup':>8} {'min_cos':>9} {'nDCG@10':>8} {'Δ nDCG':>7}")
    for r in rows:
        if "speedup_vs_st" in r:
            print(f"{r['name']:<12} {r['backend']:<22} {r['docs_per_s']:>8} {r['speedup_vs_st']:>8} "
                  f"{r['min_cosine']:>9} {r['ndcg@10']:>8} {r['ndcg@10_change_vs_st']:>7}")
        else:
            print(r)
    meta = {"benchmark": "bench_embed", "device": "cpu", "threads": args.threads, "shared_machine": True,
            "git": git_sha(), "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": library_versions()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([{**meta, **r} for r in rows], indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
