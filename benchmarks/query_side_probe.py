"""Query-side training probe, outside the job: the documents keep the base model's vectors (every abstract as
128-token passages, as evaluate scores them) and only a query encoder trains, with a softmax over every document
(a document scores as its best passage), on judged training claims and/or a job's synthetic queries. Every
``--eval-every`` steps it scores the judged dev claims against the whole corpus and tests the change with the
paired randomization test, split by whether a claim's abstract was among the judged training documents.

    python benchmarks/query_side_probe.py --data ~/.cache/embedforge/datasets/scifact \
        --generate RUN/generate-* --steps 300 --synthetic-share 0.5 --out benchmarks/results/query_side_probe.json

``train.mode: query`` is the same idea inside the train stage (its chunks are the job's, not 128-token
passages); this probe is how the idea was first measured.
"""
import argparse
import glob
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from sentence_transformers import SentenceTransformer

from embedforge.data.beir import load_beir, load_qrels
from embedforge.data.chunking import TokenCounter, passages
from embedforge.device import cpu_model
from embedforge.evaluation.metrics import evaluate_run, paired_test
from embedforge.models import resolve_model
from embedforge.training.checkpoints import interpolate

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=300)
p.add_argument("--eval-every", type=int, default=50)
p.add_argument("--lr", type=float, default=2e-5)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--scale", type=float, default=20.0)
p.add_argument("--synthetic-share", type=float, default=0.5)
p.add_argument("--kinds", default="ict,keyword")
p.add_argument("--dims", default="384")
p.add_argument("--split", default="train-dev")
p.add_argument("--train-split", default="train-heldout")
p.add_argument("--out", default="query_side_probe.json")
p.add_argument("--data", type=Path, default=Path.home() / ".cache/embedforge/datasets/scifact")
p.add_argument("--generate", type=Path, help="a generate stage directory (its shards hold the synthetic queries)")
p.add_argument("--cache", type=Path, default=Path("query_side_probe_passages.npy"))
p.add_argument("--seed", type=int, default=0)
p.add_argument("--save", action="store_true")
p.add_argument("--start-shares", default="", help="also score WiSE-FT averages with these shares of the start "
               "weights at every evaluation, e.g. 0.25,0.5 (train.weight_averaging)")
a = p.parse_args()
torch.manual_seed(a.seed)
random.seed(a.seed)
np.random.seed(a.seed)
torch.set_num_threads(2)
D = a.data
path = resolve_model("all-MiniLM-L6-v2")
ds = load_beir(D, split=a.split)
doc_row = {d: i for i, d in enumerate(ds.corpus_ids)}
cache = a.cache
counter = TokenCounter(path)
texts, owner = passages(ds.corpus_titles, ds.corpus_bodies, counter, 128)
owner = np.asarray(owner)
base = SentenceTransformer(str(path), device="cpu")
if cache.exists():
    P = np.load(cache)
else:
    t = time.time()
    P = base.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    np.save(cache, P)
    print(f"encoded {len(texts)} passages in {time.time()-t:.0f}s", flush=True)
starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
assert len(starts) == len(ds.corpus_ids)
trained_docs = set().union(*[set(v) for v in load_qrels(D / f"qrels/{a.train_split}.tsv").values()])
seen_q = {q for q, docs in ds.qrels.items() if set(docs) & trained_docs}
dims = [int(x) for x in a.dims.split(",")]

def doc_rank(Q, dim):
    Pd = P[:, :dim] / np.linalg.norm(P[:, :dim], axis=1, keepdims=True)
    Qd = Q[:, :dim] / np.linalg.norm(Q[:, :dim], axis=1, keepdims=True)
    S = np.maximum.reduceat(Qd @ Pd.T, starts, axis=1)
    top = np.argsort(-S, axis=1)[:, :100]
    return {q: {ds.corpus_ids[j]: float(S[i, j]) for j in top[i]} for i, q in enumerate(ds.query_ids)}

def dev(model, tag):
    Q = model.encode(ds.query_texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    out = {}
    for dim in dims:
        m = evaluate_run(ds.qrels, doc_rank(Q, dim))
        out[dim] = {q: v["ndcg_at_10"] for q, v in m.per_query.items()}
    return out

base_scores = dev(base, "base")
for dim in dims:
    print(f"base @{dim}: {np.mean(list(base_scores[dim].values())):.4f}", flush=True)

# training rows: (query, doc row, set of doc rows to mask)
jq = {}
for line in open(D / "queries.jsonl"):
    r = json.loads(line)
    jq[r["_id"]] = r["text"]
judged = []
for qid, docs in load_qrels(D / f"qrels/{a.train_split}.tsv").items():
    rows = {doc_row[d] for d in docs if d in doc_row}
    for r in rows:
        judged.append((jq[qid], r, rows - {r}))
kinds = set(a.kinds.split(","))
synth = []
for f in sorted(glob.glob(str(a.generate / "shards" / "*.parquet"))) if a.generate else []:
    t = pq.read_table(f, columns=["query", "doc_id", "kind"]).to_pylist()
    synth += [(r["query"], doc_row[r["doc_id"]], set()) for r in t if r["kind"] in kinds and r["doc_id"] in doc_row]
print(f"judged rows {len(judged)}, synthetic rows {len(synth)}", flush=True)

model = SentenceTransformer(str(path), device="cpu")
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
warm = max(1, a.steps // 10)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (a.steps - s) / max(1, a.steps - warm)) if s >= warm else (s + 1) / warm)
Pt = torch.from_numpy(P)
own_t = torch.from_numpy(owner)
nd = len(ds.corpus_ids)
Pdims = {dim: torch.nn.functional.normalize(Pt[:, :dim], dim=1) for dim in dims}
hist = []
start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
shares = [float(x) for x in a.start_shares.split(",") if x]

def report(step):
    model.eval()
    with torch.no_grad():
        tuned_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for share in shares:
            model.load_state_dict(interpolate(tuned_state, start_state, share))
            score(step, share, dev(model, str(step)))
        model.load_state_dict(tuned_state)
        sc = dev(model, str(step))
    model.train()
    score(step, 0.0, sc)

def score(step, share, sc):
    row = {"step": step, "start_share": share}
    for dim in dims:
        t = paired_test(base_scores[dim], sc[dim], n_resamples=2000)
        seen = np.mean([sc[dim][q] - base_scores[dim][q] for q in seen_q])
        other = np.mean([sc[dim][q] - base_scores[dim][q] for q in sc[dim] if q not in seen_q])
        row[dim] = {"ndcg": t["mean_candidate"], "delta": t["delta"], "p": t["p_value_randomization"], "seen": seen, "other": other}
        print(f"step {step} share {share} @{dim}: {t['mean_candidate']:.4f} ({t['delta']:+.4f}, p {t['p_value_randomization']:.3f}) seen {seen:+.4f} other {other:+.4f}", flush=True)
    hist.append(row)
t0 = time.time()
for step in range(1, a.steps + 1):
    nj = a.batch - int(round(a.batch * a.synthetic_share)) if synth else a.batch
    batch = random.sample(judged, nj) + (random.sample(synth, a.batch - nj) if a.batch - nj else [])
    feats = model.tokenize([b[0] for b in batch])
    q = model(feats)["sentence_embedding"]
    loss = 0.0
    target = torch.tensor([b[1] for b in batch])
    for dim in dims:
        qd = torch.nn.functional.normalize(q[:, :dim], dim=1)
        s = qd @ Pdims[dim].T  # B x passages
        S = torch.full((len(batch), nd), -1e4).scatter_reduce(1, own_t.expand(len(batch), -1), s, reduce="amax", include_self=False)
        S = S * a.scale
        for i, b in enumerate(batch):
            if b[2]:
                S[i, list(b[2])] = -1e4
        loss = loss + torch.nn.functional.cross_entropy(S, target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 10 == 0:
        print(f"step {step} loss {loss.item():.3f} {time.time()-t0:.0f}s", flush=True)
    if step % a.eval_every == 0:
        report(step)
json.dump({"args": vars(a), "cpu": cpu_model(), "load_average": os.getloadavg(), "seconds": round(time.time() - t0, 1),
           "base": {d: float(np.mean(list(base_scores[d].values()))) for d in dims}, "hist": hist},
          open(a.out, "w"), indent=1, default=str)
if a.save:
    model.save(str(Path(a.out).with_suffix("")) + "-model")
