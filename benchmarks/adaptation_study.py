"""Does teacher-guided adaptation help on real judged queries, and which label-free signal moves with it?

A study on a labelled BEIR collection used as a development set (SciFact train claims, Cranfield): pseudo-queries
are made from the corpus alone (inverse cloze: a sentence of a document, cut out of it), labelled by the hybrid
teacher (z-score fusion of BM25 and the base dense model over the whole corpus, the teacher of
``train.teacher: hybrid``), and the student is trained by listwise KL distillation against the teacher's scores
(in-batch passages + one teacher-ranked hard negative per query, inside Matryoshka). At each evaluation point it
reports, per dimension:

- ``real``: nDCG@10 on the collection's judged queries (the truth; never seen by training),
- ``synthetic``: nDCG@10 of held-out pseudo-queries against their source passage (the old validation signal),
- ``teacher``: nDCG@10 of held-out pseudo-queries against the teacher's top 10 (graded 3/2/1 for ranks 1/2–3/4–10),

each with the paired significance test against the base model. The training loop is a plain torch loop rather
than the train stage, so one cached corpus encoding serves every signal at every evaluation point; the loss and
labels are the same as ``loss: distill_kl`` with ``teacher: hybrid``.

    python benchmarks/adaptation_study.py --data ~/.cache/embedforge/datasets/cranfield --split test --out benchmarks/results/adaptation_cranfield.json

Which query kinds pay: with ``--queries-from`` (a job's generate stage folder) and ``--chunks-from`` (its chunk
stage folder), the pseudo-queries are the job's own, and each entry of ``--kinds`` (``llm``, ``ict``, ``title``,
``keyword``, or a mix such as ``llm+ict``) trains its own student from the base. Only chunks that have a query of
every kind named are used, one query per chunk and kind, so every condition trains on the same passages and
differs only in the queries' kind:

    python benchmarks/adaptation_study.py --data ~/.cache/embedforge/datasets/scifact --split train \
        --queries-from RUN/generate-* --chunks-from RUN/chunk-* --kinds llm,ict,title,keyword --out kinds.json

Encoding and training use bf16 autocast only where the CPU has native bf16 (``embedforge.device``); elsewhere fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedforge.data.beir import load_beir
from embedforge.data.shards import read_table
from embedforge.device import autocast, cpu_model, cpu_native_bf16
from embedforge.evaluation.metrics import evaluate_run, paired_test, run_from_rankings
from embedforge.models import resolve_model
from embedforge.runner import git_sha, library_versions
from embedforge.search.bm25 import BM25Retriever
from embedforge.search.fusion import zscore_fusion
from embedforge.training.data import load_passages

DIMS = [384, 192, 96, 48]
DTYPE = torch.bfloat16 if cpu_native_bf16() else torch.float32  # emulated bf16 is ~100x slower than fp32


def encode(model, texts: list[str], max_len: int, bs: int = 64) -> np.ndarray:
    """Unit-norm fp32 vectors (bf16 autocast where the CPU has native bf16, longest first)."""
    model.eval()
    order = np.argsort([-len(t) for t in texts])
    out = np.zeros((len(texts), model.get_embedding_dimension()), dtype=np.float32)
    with torch.inference_mode(), autocast(torch.device("cpu"), DTYPE):
        for i in range(0, len(texts), bs):
            idx = order[i:i + bs]
            feats = model.tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=max_len,
                                    return_tensors="pt")
            out[idx] = model(dict(feats))["sentence_embedding"].float().numpy()
    return out


def top(q: np.ndarray, c: np.ndarray, dim: int, k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    qd = torch.nn.functional.normalize(torch.from_numpy(q[:, :dim]), dim=-1)
    cd = torch.nn.functional.normalize(torch.from_numpy(c[:, :dim]), dim=-1)
    v, i = torch.topk(qd @ cd.T, min(k, cd.shape[0]), dim=1)
    return v.numpy(), i.numpy()


def per_query_ndcg(ids: np.ndarray, qids: list[str], doc_ids: list[str], qrels: dict) -> dict[str, float]:
    run = run_from_rankings(qids, [[doc_ids[j] for j in row if j >= 0] for row in ids])
    return {q: m["ndcg_at_10"] for q, m in evaluate_run({q: qrels[q] for q in qids}, run).per_query.items()}


def ict_pairs(ds, n: int, seed: int) -> list[tuple[str, str, int]]:
    """(sentence, its document without it, document row) for documents of three or more sentences."""
    rng = random.Random(seed)
    rows = list(range(len(ds.corpus_texts)))
    rng.shuffle(rows)
    out = []
    for r in rows:
        sents = [s for s in re.split(r"(?<=[.!?])\s+", ds.corpus_texts[r]) if len(s.split()) >= 5]
        if len(sents) < 3:
            continue
        j = rng.randrange(len(sents))
        out.append((sents[j], " ".join(sents[:j] + sents[j + 1:]), r))
        if len(out) >= n:
            break
    return out


def job_pairs(queries_from: Path, chunks_from: Path, ds, conditions: list[str], n: int,
              seed: int) -> dict[str, list[tuple[str, str, int]]]:
    """condition → (query, its chunk's passage text, document row), from a job's generate and chunk outputs.

    Only chunks with a query of every kind named in ``conditions`` are used (one query per chunk and kind, seeded),
    so the conditions share their passages; a mix (``llm+ict``) takes its kinds in turn over those chunks.
    """
    kinds = sorted({k for c in conditions for k in c.split("+")})
    text = load_passages(chunks_from)
    row_of = {d: i for i, d in enumerate(ds.corpus_ids)}
    by_chunk: dict[str, dict[str, list[dict]]] = {}
    for q in read_table(queries_from, columns=["chunk_id", "doc_id", "query", "kind"]).to_pylist():
        if q["kind"] in kinds and q["chunk_id"] in text and q["doc_id"] in row_of:
            by_chunk.setdefault(q["chunk_id"], {}).setdefault(q["kind"], []).append(q)
    shared = sorted(c for c, ks in by_chunk.items() if len(ks) == len(kinds))
    random.Random(seed).shuffle(shared)
    shared = shared[:n]
    out = {}
    for cond in conditions:
        parts = cond.split("+")
        out[cond] = []
        for j, c in enumerate(shared):
            q = random.Random(f"{seed}:{c}:{cond}").choice(by_chunk[c][parts[j % len(parts)]])
            out[cond].append((q["query"], text[c], row_of[q["doc_id"]]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--queries", type=int, default=2000, help="pseudo-queries (a quarter, at most 200, held out)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--scale", type=float, default=20.0, help="student cosine scale (inverse temperature)")
    ap.add_argument("--teacher-temperature", type=float, default=1.0, help="divides the teacher's fused z-scores")
    ap.add_argument("--train-max-len", type=int, default=128)
    ap.add_argument("--eval-max-len", type=int, default=256)
    ap.add_argument("--average", type=float, default=0.0, help="also evaluate base/tuned weight averaging (share of base)")
    ap.add_argument("--queries-from", type=Path, help="a job's generate stage folder: train on its queries")
    ap.add_argument("--chunks-from", type=Path, help="the same job's chunk stage folder (the queries' passages)")
    ap.add_argument("--kinds", default="llm,ict,title,keyword",
                    help="with --queries-from: comma-separated conditions, each a kind or a mix (llm+ict)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if bool(args.queries_from) != bool(args.chunks_from):
        ap.error("--queries-from and --chunks-from go together (a job's generate and chunk stage folders)")
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    from sentence_transformers import SentenceTransformer

    ds = load_beir(args.data, args.split)
    base = SentenceTransformer(str(resolve_model(args.model)), device="cpu")
    t0 = time.time()
    corpus0 = encode(base, ds.corpus_texts, args.eval_max_len)
    if args.queries_from:
        conditions = job_pairs(args.queries_from, args.chunks_from, ds, args.kinds.split(","), args.queries, seed=1)
    else:
        conditions = {"ict": ict_pairs(ds, args.queries, seed=1)}
    warm = max(1, args.steps // 10)
    bm25 = BM25Retriever(ds.corpus_texts, stemmer=None)  # unstemmed, as the train stage's hybrid teacher
    base_real = encode(base, ds.query_texts, args.eval_max_len)
    points, counts, finals = [], {}, {}
    for cond, pairs in conditions.items():
        random.Random(3).shuffle(pairs)
        n_val = min(200, len(pairs) // 4)
        val, train = pairs[:n_val], pairs[n_val:]
        # the hybrid teacher over the whole corpus
        texts = [p[0] for p in pairs]
        fused_s, fused_i = zscore_fusion([top(encode(base, texts, args.eval_max_len), corpus0, 384),
                                          bm25.search(texts, 100)], 100)
        teacher = [{int(i): float(v) for i, v in zip(fused_i[r], fused_s[r], strict=True) if i >= 0}
                   for r in range(len(pairs))]
        val_t, train_t = teacher[:n_val], teacher[n_val:]
        keep, hard = [], {}
        for i, (_, _, row) in enumerate(train):
            ranked = list(train_t[i])
            if row not in ranked[:3]:  # the teacher's round-trip filter
                continue
            cands = [d for d in ranked[3:30] if d != row and train_t[i][d] < train_t[i][row] - 0.5]
            if cands:
                keep.append(i)
                hard[i] = random.Random(i).choice(cands)
        counts[cond] = {"pseudo_queries": len(pairs), "trained_on": len(keep)}
        prefix = f"{cond}: " if args.queries_from else ""

        def evaluate(model, label: str, val=val, val_t=val_t) -> dict:
            corpus = corpus0 if model is base else encode(model, ds.corpus_texts, args.eval_max_len)
            real_q = base_real if model is base else encode(model, ds.query_texts, args.eval_max_len)
            val_q = encode(model, [p[0] for p in val], args.eval_max_len)
            vids = [f"v{k}" for k in range(len(val))]
            syn_qrels = {v: {ds.corpus_ids[p[2]]: 1} for v, p in zip(vids, val, strict=True)}
            teach_qrels = {v: {ds.corpus_ids[r]: (3 if j == 0 else 2 if j < 3 else 1) for j, r in enumerate(list(t)[:10])}
                           for v, t in zip(vids, val_t, strict=True)}
            out = {"point": label}
            for dim in (384, 96):
                out[f"real@{dim}"] = per_query_ndcg(top(real_q, corpus, dim)[1], ds.query_ids, ds.corpus_ids, ds.qrels)
                vi = top(val_q, corpus, dim, 10)[1]
                out[f"synthetic@{dim}"] = per_query_ndcg(vi, vids, ds.corpus_ids, syn_qrels)
                out[f"teacher@{dim}"] = per_query_ndcg(vi, vids, ds.corpus_ids, teach_qrels)
            return out

        points.append(evaluate(base, f"{prefix}base"))
        model = copy.deepcopy(base)
        torch.manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (args.steps - s) / max(1, args.steps - warm))))
        rng, order = random.Random(0), []

        def embed(items: list[str], model=model) -> torch.Tensor:
            f = model.tokenizer(items, padding=True, truncation=True, max_length=args.train_max_len, return_tensors="pt")
            with autocast(torch.device("cpu"), DTYPE):
                return model(dict(f))["sentence_embedding"].float()

        for step in range(1, args.steps + 1):
            model.train()
            if len(order) < args.batch:
                more = keep[:]
                rng.shuffle(more)
                order += more
            batch, order = order[:args.batch], order[args.batch:]
            rows = [train[i][2] for i in batch] + [hard[i] for i in batch]
            q = embed([train[i][0] for i in batch])
            d = embed([train[i][1] for i in batch] + [ds.corpus_texts[hard[i]] for i in batch])
            lowest = [min(train_t[i].values()) for i in batch]
            target = torch.tensor([[train_t[i].get(r, lo) for r in rows] for i, lo in zip(batch, lowest, strict=True)])
            target = F.log_softmax(target / args.teacher_temperature, -1)
            loss = sum(F.kl_div(F.log_softmax(F.normalize(q[:, :k], dim=-1) @ F.normalize(d[:, :k], dim=-1).T * args.scale, -1),
                                target, log_target=True, reduction="batchmean") for k in DIMS) / len(DIMS)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            if step % args.eval_every == 0 or step == args.steps:
                points.append(evaluate(model, f"{prefix}step {step}"))
        if args.average > 0:
            avg = copy.deepcopy(model)
            b = base.state_dict()
            avg.load_state_dict({k: (args.average * b[k].float() + (1 - args.average) * v.float()).to(v.dtype)
                                 for k, v in model.state_dict().items()})
            points.append(evaluate(avg, f"{prefix}average {args.average} base"))
        finals[cond] = points[-1]
        print(f"{cond}: {counts[cond]} ({time.time() - t0:.0f} s)", flush=True)

    rows = []
    for p in points:
        if p["point"].split(": ")[-1] == "base":
            ref = p  # each condition's own base row (the real-query figures are the same; the held-out ones differ)
        row = {"point": p["point"]}
        for key in [k for k in p if "@" in k]:
            test = paired_test(ref[key], p[key])
            row[key] = round(test["mean_candidate"], 4)
            row[f"{key} delta"] = round(test["delta"], 4)
            row[f"{key} p"] = round(test["p_value_randomization"], 4)
        rows.append(row)
    first = next(iter(finals))
    versus = [{"condition": c, "against": first, **{f"real@{d} delta": round(t["delta"], 4) for d, t in tests.items()},
               **{f"real@{d} p": round(t["p_value_randomization"], 4) for d, t in tests.items()}}
              for c in list(finals)[1:]
              for tests in [{d: paired_test(finals[first][f"real@{d}"], finals[c][f"real@{d}"]) for d in (384, 96)}]]
    for row in rows + versus:
        print(" | ".join(f"{k} {v}" for k, v in row.items()))
    load = os.getloadavg()[0]
    record = {"benchmark": "adaptation_study", "data": str(args.data), "split": args.split, "args": {
        k: str(v) for k, v in vars(args).items()}, "precision": str(DTYPE).replace("torch.", ""),
        **(counts["ict"] if not args.queries_from else {"conditions": counts}),
        "rows": rows, "conditions_against_first": versus, "seconds": round(time.time() - t0, 1), "cpu": cpu_model(),
        "load_average": load, "git": git_sha(), "libraries": library_versions()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
