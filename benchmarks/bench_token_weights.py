"""Corpus IDF token weights (``train.token_weights: idf``): base model vs base + weights, on real judged queries.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_token_weights.py \
        --data ~/.cache/embedforge/datasets/scifact --split train --data ~/.cache/embedforge/datasets/cranfield
    # get the collections first: embedforge datasets get scifact (and cranfield) [--from PATH]

For each BEIR collection: the packaged MiniLM (or ``--model``) encodes the corpus and the judged queries of
``--split``; then the same model with a ``WordWeights`` module built from that corpus's idf (the train stage's
rule, :mod:`embedforge.training.token_weights`) for each ``--powers`` value. Dense exact search; nDCG@10 per
Matryoshka dimension (truncate + renormalize) and per query, the change vs the base model with the paired t-test
and randomization test p-values. The honest protocol: choose the power on development queries (SciFact
``--split train``, Cranfield), then run the SciFact test claims once with the chosen power. Prints a table and
writes JSON rows with the CPU model and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from embedforge.data.beir import load_beir
from embedforge.device import cpu_model
from embedforge.encoding.encoder import Encoder, truncate_normalize
from embedforge.evaluation.metrics import evaluate_run, paired_test
from embedforge.models import resolve_model
from embedforge.provenance import git_sha
from embedforge.search.index import search
from embedforge.training.token_weights import weight_saved_model

CORPUS_VECTORS: dict[tuple[str, str], object] = {}
"""Corpus vectors per (collection folder, model variant): two splits of one collection encode it once."""


def per_query_ndcg(encoder: Encoder, ds, dims: list[int], key: tuple[str, str]) -> dict[int, dict[str, float]]:
    if key not in CORPUS_VECTORS:
        CORPUS_VECTORS[key] = encoder.encode(ds.corpus_texts, normalize=False)
    corpus = CORPUS_VECTORS[key]
    queries = encoder.encode(ds.query_texts, normalize=False)
    out = {}
    for d in dims:
        _, ids = search(truncate_normalize(queries, d), truncate_normalize(corpus, d), 100)
        run = {q: {ds.corpus_ids[j]: float(100 - r) for r, j in enumerate(row) if j >= 0}
               for q, row in zip(ds.query_ids, ids, strict=True)}
        out[d] = {q: v["ndcg_at_10"] for q, v in evaluate_run(ds.qrels, run).per_query.items()}
    return out


def parse_collections(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str], list[int]]:
    """Add ``--data``, ``--split``, ``--model`` and ``--dims`` to ``ap`` and parse it: the arguments, one split per
    collection, the dimensions."""
    ap.add_argument("--data", type=Path, action="append", required=True, help="BEIR folder (repeat)")
    ap.add_argument("--split", action="append", help="qrels split per --data (default test)")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--dims", default="384,192,96,48")
    a = ap.parse_args()
    splits = a.split or ["test"] * len(a.data)
    if len(splits) != len(a.data):
        ap.error("give one --split per --data (or none)")
    return a, splits, [int(x) for x in a.dims.split(",")]


def run_meta(benchmark: str, model: str, load_before: tuple[float, ...]) -> dict:
    """What every JSON row of a quality benchmark records about the run: CPU, git, load average, time."""
    return {"benchmark": benchmark, "model": model, "cpu_model": cpu_model(), "git": git_sha(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_rows(out: Path, meta: dict, rows: list[dict]) -> None:
    """``rows`` (each with ``meta``) as JSON at ``out``, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps([{**meta, **r} for r in rows], indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--powers", default="0.5")
    ap.add_argument("--floor", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_token_weights.json"))
    a, splits, dims = parse_collections(ap)
    load_before = os.getloadavg()
    base_dir = resolve_model(a.model)
    rows = []
    for data, split in zip(a.data, splits, strict=True):
        ds = load_beir(data, split)
        t = time.time()
        base = per_query_ndcg(Encoder(base_dir, backend="torch"), ds, dims, (str(data), "base"))
        for power in [float(p) for p in a.powers.split(",")]:
            work = Path(tempfile.mkdtemp(prefix="tokw-"))
            try:
                shutil.copytree(base_dir, work / "m")
                weight_saved_model(work / "m", ds.corpus_texts, floor=a.floor, power=power)
                weighted = per_query_ndcg(Encoder(work / "m", backend="torch"), ds, dims, (str(data), f"idf{power}"))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            for d in dims:
                test = paired_test(base[d], weighted[d])
                rows.append({"dataset": ds.name, "split": split, "queries": len(ds.query_ids), "power": power,
                             "floor": a.floor, "dim": d, "ndcg@10_base": round(test["mean_reference"], 4),
                             "ndcg@10_weighted": round(test["mean_candidate"], 4), "delta": round(test["delta"], 4),
                             "p_ttest": round(test["p_value_ttest"], 4),
                             "p_randomization": round(test["p_value_randomization"], 4)})
        print(f"{ds.name}/{split}: {time.time() - t:.0f} s", flush=True)
    meta = run_meta("bench_token_weights", a.model, load_before)
    print(f"\n{'dataset':10} {'split':6} {'power':>5} {'dim':>4} {'base':>7} {'weighted':>8} {'Δ':>8} {'p(t)':>7} "
          f"{'p(rand)':>7}")
    for r in rows:
        print(f"{r['dataset']:10} {r['split']:6} {r['power']:5} {r['dim']:4} {r['ndcg@10_base']:7.4f} "
              f"{r['ndcg@10_weighted']:8.4f} {r['delta']:+8.4f} {r['p_ttest']:7.4f} {r['p_randomization']:7.4f}")
    write_rows(a.out, meta, rows)


if __name__ == "__main__":
    main()
