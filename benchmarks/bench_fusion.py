"""BM25 in hybrid search: its weight (``evaluate.bm25_weights``) and its stemmer (``evaluate.bm25_stemmer``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fusion.py \\
        --data ~/.cache/embedforge/datasets/scifact --split train \\
        --data ~/.cache/embedforge/datasets/cranfield --split test \\
        --model job=runs/scifact/train-<hash>/model --weights 0.5,0.75,1,1.5,2 --stemmers none,english

For each BEIR collection, stemmer and model, the evaluation harness (the ``evaluate`` stage's own code) runs with
``hybrid: [zscore, rrf]`` and every weight; the dense run is encoded once (and comes from the embedding cache
when it holds the vectors). Every fused row is tested (paired randomization, per query) against the same fusion
at equal weights, against the dense model alone, and against the same fusion and weight with the first stemmer;
BM25 alone gets a row per stemmer (tested against the first). Honest protocol: settings are chosen on SciFact
``--split train`` and Cranfield; the SciFact test claims are run once with the chosen setting. Prints a table and
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
from embedforge.evaluation.harness import evaluate_models, parse_model_ref  # noqa: E402
from embedforge.evaluation.metrics import paired_test  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_collection_args(ap, "384,96")
    ap.add_argument("--weights", default="0.5,0.75,1,1.5,2", help="BM25 weights to try (dense = 1)")
    ap.add_argument("--fusion", default="zscore,rrf")
    ap.add_argument("--score-by", default="best_passage", choices=["document", "best_passage"])
    ap.add_argument("--passage-tokens", type=int, default=128)
    ap.add_argument("--stemmers", default="english", help="BM25 stemmers to try (none or a Snowball language)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_fusion.json"))
    a = ap.parse_args()
    splits, models, dims = collections_and_models(ap, a)
    weights = [float(x) for x in a.weights.split(",")]
    fusions = a.fusion.split(",")
    stemmers = [None if x == "none" else x for x in a.stemmers.split(",")]
    cfg = EvaluateConfig(dims=dims, quantizations=["none"], latency=False, bm25=True, heldout=False,
                         hybrid=fusions, bm25_weights=weights, score_by=a.score_by,
                         passage_tokens=a.passage_tokens if a.score_by == "best_passage" else None)
    load_before = os.getloadavg()
    rows = []
    for data, split in zip(a.data, splits, strict=True):
        ds = load_beir(data, split)
        t = time.time()
        first: dict[str, dict] = {}  # label → dim → per-query nDCG@10 with the first stemmer
        for stemmer in stemmers:
            result = evaluate_models([ds], [*models, parse_model_ref("bm25")],
                                     cfg.model_copy(update={"bm25_stemmer": stemmer}))
            common = {"collection": ds.name, "split": split, "queries": len(ds.query_ids), "bm25_stemmer": stemmer,
                      "score_by": a.score_by, "passage_tokens": cfg.passage_tokens}
            lexical = per_query(result, "bm25")[None]
            vs_first = paired_test(first.setdefault("bm25", {None: lexical})[None], lexical)
            rows.append({**common, "model": "bm25", "model_ref": "bm25", "fusion": None, "bm25_weight": None,
                         "dim": None, "ndcg_at_10": round(vs_first["mean_candidate"], 4),
                         "delta_vs_first_stemmer": round(vs_first["delta"], 4),
                         "p_vs_first_stemmer": round(vs_first["p_value_randomization"], 4)})
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
                            vs_first = paired_test(first.setdefault(label, scores)[d], scores[d])
                            rows.append({**common, "model": model.label, "model_ref": model.ref, "fusion": fusion,
                                         "bm25_weight": w, "dim": d, "ndcg_at_10": round(vs_dense["mean_candidate"], 4),
                                         "dense_ndcg_at_10": round(vs_dense["mean_reference"], 4),
                                         "delta_vs_dense": round(vs_dense["delta"], 4),
                                         "p_vs_dense": round(vs_dense["p_value_randomization"], 4),
                                         "delta_vs_equal_weights": round(vs_equal["delta"], 4),
                                         "p_vs_equal_weights": round(vs_equal["p_value_randomization"], 4),
                                         "delta_vs_first_stemmer": round(vs_first["delta"], 4),
                                         "p_vs_first_stemmer": round(vs_first["p_value_randomization"], 4)})
        print(f"{ds.name}/{split}: {time.time() - t:.0f} s", flush=True)
    print(f"\n{'collection':<18}{'stemmer':<9}{'model':<10}{'fusion':<8}{'w':>6}{'dim':>5}{'nDCG@10':>9}{'Δ dense':>9}"
          f"{'p':>8}{'Δ w=1':>8}{'p':>8}{'Δ stem':>8}{'p':>8}")
    for r in rows:
        dash = "–"
        print(f"{r['collection'] + '/' + r['split']:<18}{str(r['bm25_stemmer']):<9}{r['model']:<10}"
              f"{r['fusion'] or dash:<8}{r['bm25_weight'] or 0:>6g}{r['dim'] or 0:>5}{r['ndcg_at_10']:>9.4f}"
              f"{r.get('delta_vs_dense', 0):>+9.4f}{r.get('p_vs_dense', 1):>8.4f}{r.get('delta_vs_equal_weights', 0):>+8.4f}"
              f"{r.get('p_vs_equal_weights', 1):>8.4f}{r['delta_vs_first_stemmer']:>+8.4f}{r['p_vs_first_stemmer']:>8.4f}")
    write_rows(a.out, run_meta("bench_fusion", ",".join(m.ref for m in models), load_before), rows)


if __name__ == "__main__":
    main()
