"""BM25's weight in hybrid search (``evaluate.bm25_weights``): the dense model fused with BM25 at several weights.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fusion.py \\
        --data ~/.cache/embedforge/datasets/scifact --split train \\
        --data ~/.cache/embedforge/datasets/cranfield --split test \\
        --model job=runs/scifact/train-<hash>/model --weights 0.5,0.75,1,1.5,2

For each BEIR collection and model, the evaluation harness (the ``evaluate`` stage's own code) runs once with
``hybrid: [zscore, rrf]`` and every weight; the dense run is encoded once (and comes from the embedding cache
when it holds the vectors). Every fused row is tested (paired randomization, per query) against the same fusion
at equal weights and against the dense model alone. Honest protocol: the weight is chosen on SciFact
``--split train`` and Cranfield; the SciFact test claims are run once with the chosen weight. Prints a table and
writes JSON rows with the CPU model and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_passages import add_collection_args, collections_and_models, per_query  # noqa: E402
from bench_token_weights import run_meta, write_rows  # noqa: E402

from embedforge.configs.evaluate import EvaluateConfig  # noqa: E402
from embedforge.data.beir import load_beir  # noqa: E402
from embedforge.evaluation.harness import evaluate_models  # noqa: E402
from embedforge.evaluation.metrics import paired_test  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_collection_args(ap, "384,96")
    ap.add_argument("--weights", default="0.5,0.75,1,1.5,2", help="BM25 weights to try (dense = 1)")
    ap.add_argument("--fusion", default="zscore,rrf")
    ap.add_argument("--score-by", default="best_passage", choices=["document", "best_passage"])
    ap.add_argument("--passage-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_fusion.json"))
    a = ap.parse_args()
    splits, models, dims = collections_and_models(ap, a)
    weights = [float(x) for x in a.weights.split(",")]
    fusions = a.fusion.split(",")
    cfg = EvaluateConfig(dims=dims, quantizations=["none"], latency=False, bm25=True, heldout=False,
                         hybrid=fusions, bm25_weights=weights, score_by=a.score_by,
                         passage_tokens=a.passage_tokens if a.score_by == "best_passage" else None)
    load_before = os.getloadavg()
    rows = []
    for data, split in zip(a.data, splits, strict=True):
        ds = load_beir(data, split)
        t = time.time()
        result = evaluate_models([ds], models, cfg)
        for model in models:
            dense = per_query(result, model.label)
            for fusion in fusions:
                equal = per_query(result, f"{model.label}+bm25-{fusion}")
                for w in weights:
                    label = f"{model.label}+bm25-{fusion}" + ("" if w == 1.0 else f"-w{w:g}")
                    scores = per_query(result, label)
                    for d in dims:
                        vs_equal = paired_test(equal[d], scores[d])
                        vs_dense = paired_test(dense[d], scores[d])
                        rows.append({"collection": ds.name, "split": split, "queries": len(ds.query_ids),
                                     "model": model.label, "model_ref": model.ref, "score_by": a.score_by,
                                     "passage_tokens": cfg.passage_tokens, "fusion": fusion, "bm25_weight": w,
                                     "dim": d, "ndcg_at_10": round(vs_dense["mean_candidate"], 4),
                                     "dense_ndcg_at_10": round(vs_dense["mean_reference"], 4),
                                     "delta_vs_dense": round(vs_dense["delta"], 4),
                                     "p_vs_dense": round(vs_dense["p_value_randomization"], 4),
                                     "delta_vs_equal_weights": round(vs_equal["delta"], 4),
                                     "p_vs_equal_weights": round(vs_equal["p_value_randomization"], 4)})
        print(f"{ds.name}/{split}: {time.time() - t:.0f} s", flush=True)
    print(f"\n{'collection':<18}{'model':<10}{'fusion':<8}{'w':>6}{'dim':>5}{'nDCG@10':>9}{'dense':>8}"
          f"{'Δ dense':>9}{'p':>8}{'Δ w=1':>8}{'p':>8}")
    for r in rows:
        print(f"{r['collection'] + '/' + r['split']:<18}{r['model']:<10}{r['fusion']:<8}{r['bm25_weight']:>6g}"
              f"{r['dim']:>5}{r['ndcg_at_10']:>9.4f}{r['dense_ndcg_at_10']:>8.4f}{r['delta_vs_dense']:>+9.4f}"
              f"{r['p_vs_dense']:>8.4f}{r['delta_vs_equal_weights']:>+8.4f}{r['p_vs_equal_weights']:>8.4f}")
    write_rows(a.out, run_meta("bench_fusion", ",".join(m.ref for m in models), load_before), rows)


if __name__ == "__main__":
    main()
