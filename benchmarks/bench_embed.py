"""Bulk-embedding benchmark: our encoder vs ``SentenceTransformer.encode`` on SciFact chunks, plus memory.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_embed.py                      # full
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_embed.py --docs 300 --rss-sizes 2000,20000   # quick

Speed: SciFact documents (all judged test documents first, then the rest up to ``--docs``) are chunked at 256
MiniLM tokens with our chunker; passages are ``title + " " + chunk``. The chunks are processed in windows of
``--window``; in each window every contender encodes the same texts back to back, so machine noise hits all
of them alike. References: ``st`` (``SentenceTransformer.encode``, batch 32, fp32) and ``st-bf16`` (the same
with ``model_kwargs={"torch_dtype": torch.bfloat16}``; ``st-fp16`` too on CUDA). Ours: ``ours`` (the default
exact path: ``backend=auto``, which times ONNX Runtime and torch fp32 at start-up and keeps the faster),
``ours-16k`` (the same with CPU batches of up to 16,384 tokens, as before batches were capped at 1,024 tokens per
thread), ``ours-torch`` (fp32 eager), ``ours-bf16`` (bf16 Linear weights, LayerNorm/softmax/pooling in fp32) and
``ours-int8`` (ORT dynamic int8, lossy); the backend column names the ONNX graph (``fused-v1``: ORT's fused
transformer graph). No cache anywhere. Reported per contender: docs/s (chunks/s),
``speedup_vs_st`` (vs ST fp32), ``speedup_same_precision`` (vs the ST reference of the same precision),
``min_cosine`` (per row, vs ST fp32), and ``peak_fraction``: useful model FLOP/s (unpadded tokens x the
model's FLOP per token at that length) over this machine's own peak, a large matmul timed in the same run
in the contender's precision (fp32 or bf16). On a CPU without native bf16 (the bf16 matmul slower than fp32, e.g.
AVX2 only) the bf16 contenders are skipped with that reason in the JSON. The JSON records the CPU model, its bf16/int8 ISA flags and the
load average before and after.

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
from functools import partial
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


def cpu_info() -> dict[str, Any]:
    """CPU model, logical CPUs and the ISA flags that matter for bf16/int8 (from /proc/cpuinfo)."""
    import os

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
    return {"cpu_model": model, "logical_cpus": os.cpu_count(), "isa": [f for f in wanted if f in flags]}


def matmul_peak(threads: int, n: int = 2048, reps: int = 5) -> dict[str, float]:
    """This machine's matmul GFLOP/s in fp32 and bf16 (best of ``reps``), the peak the contenders are held to.

    A dtype whose 256 x 256 probe runs at under a quarter of fp32's (bf16 emulated on a CPU without native bf16)
    is reported at the probe size: the full size would take minutes there."""
    import torch

    torch.set_num_threads(threads)

    def gflops(dtype: torch.dtype, size: int, repeats: int) -> float:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        return round(2 * size ** 3 / best / 1e9, 1)

    probe = {name: gflops(dtype, 256, 3) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    peak = {"fp32": gflops(torch.float32, n, reps)}
    peak["bf16"] = probe["bf16"] if probe["bf16"] < probe["fp32"] / 4 else gflops(torch.bfloat16, n, reps)
    return peak


def model_flops(hf_config: Any, lengths: list[int]) -> float:
    """FLOPs of a BERT-style encoder over sequences of ``lengths`` (unpadded): per layer and token, the Q/K/V/O
    projections (4 H^2), the FFN (2 H I) and attention scores and mixing (2 T H) multiply-adds, x2."""
    h, i, layers = hf_config.hidden_size, hf_config.intermediate_size, hf_config.num_hidden_layers
    return float(sum(2 * layers * t * (4 * h * h + 2 * h * i + 2 * t * h) for t in lengths))


def speed_and_quality(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch
    from sentence_transformers import SentenceTransformer

    from embedforge.encoding.encoder import Encoder
    from embedforge.models import resolve_model

    torch.set_num_threads(args.threads)
    texts, owners, qrels, queries = scifact_chunks(args.docs)
    if args.chunks:  # a quick run: the first chunks only (judged documents come first)
        texts, owners = texts[:args.chunks], owners[:args.chunks]
        qrels = {q: rel for q, rel in qrels.items() if any(d in set(owners) for d in rel)}
    qids = list(qrels)
    path = resolve_model("all-MiniLM-L6-v2")
    st = SentenceTransformer(str(path), device="cpu")
    st16 = SentenceTransformer(str(path), device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    peak = matmul_peak(args.threads)
    native_bf16 = peak["bf16"] >= peak["fp32"]
    references = {"st": st, "st-bf16": st16} if native_bf16 else {"st": st}
    skipped = {} if native_bf16 else {
        name: f"no native bf16 on this CPU: a bf16 matmul runs at {peak['bf16']} GFLOP/s vs {peak['fp32']} in fp32"
        for name in ("st-bf16", "ours-bf16")}
    contenders: dict[str, Any] = {name: partial(m.encode, batch_size=32, normalize_embeddings=True)
                                  for name, m in references.items()}
    precision = {"st": "fp32", "st-bf16": "bf16", "ours": "fp32", "ours-16k": "fp32", "ours-torch": "fp32",
                 "ours-bf16": "bf16", "ours-int8": "int8"}
    encoders: dict[str, Encoder] = {}
    for name, backend, dtype in (("ours", "auto", "fp32"), ("ours-16k", "auto", "fp32"), ("ours-torch", "torch", "fp32"),
                                 ("ours-bf16", "torch", "bf16"), ("ours-int8", "onnx-int8", "fp32")):
        if name in skipped:
            continue
        enc = Encoder(path, device="cpu", dtype=dtype, backend=backend,
                      cpu_batch_tokens=16384 if name == "ours-16k" else None)
        enc.encode(texts[:16])  # warm-up (and ONNX export, cached)
        encoders[name] = enc
        contenders[name] = enc.encode
    lengths = [len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]]
    flops = model_flops(st[0].auto_model.config, lengths)
    seconds = {k: 0.0 for k in contenders}
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in contenders}
    print(f"{len(texts)} chunks of {len(set(owners))} SciFact docs ({sum(lengths):,} tokens), windows of "
          f"{args.window}; matmul peak GFLOP/s {peak}", flush=True)
    for start in range(0, len(texts), args.window):
        window = texts[start:start + args.window]
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            outputs[name].append(np.asarray(fn(window), np.float32))
            seconds[name] += time.perf_counter() - t0
    ref = np.concatenate(outputs["st"])
    query_texts = [queries[q] for q in qids]
    rows = []
    for name, fn in contenders.items():
        vectors = np.concatenate(outputs[name])
        same = "st-bf16" if precision[name] == "bf16" else "st"
        achieved = flops / seconds[name] / 1e9
        rows.append({"name": name, "precision": precision[name],
                     "backend": "sentence-transformers" if name.startswith("st") else
                     encoders[name].backend + (f" {encoders[name].onnx_graph}" if encoders[name].backend == "onnx" else ""),
                     "docs": len(texts), "docs_per_s": round(len(texts) / seconds[name], 2),
                     "speedup_vs_st": round(seconds["st"] / seconds[name], 3),
                     "speedup_same_precision": round(seconds[same] / seconds[name], 3),
                     "gflops": round(achieved, 1),
                     "peak_fraction": round(achieved / peak["bf16" if precision[name] == "bf16" else "fp32"], 3),
                     "min_cosine": round(float((vectors * ref).sum(1).min()), 6),
                     "mean_cosine": round(float((vectors * ref).sum(1).mean()), 6),
                     "ndcg@10": round(ndcg10(np.asarray(fn(query_texts), np.float32), qids, vectors, owners, qrels), 4)})
        if name == "ours":
            rows[-1]["auto_probe_s"] = {k: round(v, 4) for k, v in encoders[name].timings.items()}
    base = next(r for r in rows if r["name"] == "st")["ndcg@10"]
    for r in rows:
        r["ndcg@10_change_vs_st"] = round(r["ndcg@10"] - base, 4)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", flush=True)
    return rows, {"matmul_peak_gflops": peak, "skipped": skipped, "tokens": sum(lengths), "model_gflop": round(flops / 1e9, 1)}


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
    parser.add_argument("--chunks", type=int, default=0, help="use only the first N chunks (0 = all)")
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
    import os

    load_before = os.getloadavg()
    rows, speed_meta = ([], {}) if args.skip_speed else speed_and_quality(args)
    load_after = os.getloadavg()
    mem = memory_rows([int(s) for s in args.rss_sizes.split(",") if s], args.threads)
    if len(mem) >= 2:
        growth = mem[-1]["peak_rss_mib"] / mem[0]["peak_rss_mib"] - 1
        mem.append({"name": "rss-growth", "value": round(growth, 4), "flat_within_10pct": abs(growth) <= 0.10})
    rows += mem
    print(f"\n{'name':<11} {'prec':<5} {'backend':<22} {'docs/s':>7} {'vs ST':>6} {'vs same':>7} {'peak%':>6} "
          f"{'min_cos':>9} {'nDCG@10':>8} {'Δ nDCG':>7}")
    for r in rows:
        if "speedup_vs_st" in r:
            print(f"{r['name']:<11} {r['precision']:<5} {r['backend']:<22} {r['docs_per_s']:>7} "
                  f"{r['speedup_vs_st']:>6} {r['speedup_same_precision']:>7} {100 * r['peak_fraction']:>5.1f}% "
                  f"{r['min_cosine']:>9} {r['ndcg@10']:>8} {r['ndcg@10_change_vs_st']:>7}")
        else:
            print(r)
    meta = {"benchmark": "bench_embed", "device": "cpu", "threads": args.threads, **cpu_info(), **speed_meta,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "git": git_sha(), "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": library_versions()}
    print(f"{meta['cpu_model']} ({', '.join(meta['isa'])}); load average {meta['load_average_before'][0]} → "
          f"{meta['load_average_after'][0]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([{**meta, **r} for r in rows], indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
