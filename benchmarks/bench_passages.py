"""Scoring a document by its best passage (``evaluate.score_by: best_passage``) vs one vector per document.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_passages.py \\
        --data ~/.cache/embedforge/datasets/scifact --split train \\
        --data ~/.cache/embedforge/datasets/cranfield --split test \\
        --model base=all-MiniLM-L6-v2 --model job=runs/scifact/train-<hash>/model --passage-tokens 256,128

For each BEIR collection and model, the evaluation harness (the ``evaluate`` stage's own code) runs once with
``score_by: document`` and once per passage size with ``score_by: best_passage``; exact float search, nDCG@10
per Matryoshka dimension. Every row is tested (paired randomization, per query) against the same model scored
by document, against the first model scored by document (the usual baseline), and against the first model
scored the same way (what the other model adds under that scoring). Honest protocol: the passage size
was chosen on SciFact ``--split train`` and Cranfield; the SciFact test claims are run once with the chosen
setting. Prints a table and writes JSON rows with the CPU model and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_token_weights import run_meta, write_rows  # noqa: E402

from embedforge.configs.evaluate import EvaluateConfig  # noqa: E402
from embedforge.data.beir import load_beir  # noqa: E402
from embedforge.evaluation.harness import evaluate_models, parse_model_ref  # noqa: E402
from embedforge.evaluation.metrics import paired_test  # noqa: E402


def per_query(result, label: str) -> dict[int, dict[str, float]]:
    """dim → query id → nDCG@10 of one model's float rows."""
    out: dict[int, dict[str, float]] = {}
    for row in result.per_query:
        if row["model"] == label and row["quantization"] == "none":
            out.setdefault(row["dim"], {})[row["query_id"]] = row["ndcg_at_10"]
    return out


def add_collection_args(ap: argparse.ArgumentParser, dims: str) -> None:
    """``--data`` / ``--split`` (repeat, paired), ``--model`` (repeat; first = baseline) and ``--dims``."""
    ap.add_argument("--data", type=Path, action="append", required=True, help="BEIR folder (repeat)")
    ap.add_argument("--split", action="append", help="qrels split per --data (default test)")
    ap.add_argument("--model", action="append", help="label=path or a packaged name (repeat; first = baseline)")
    ap.add_argument("--dims", default=dims)


def collections_and_models(ap: argparse.ArgumentParser, a: argparse.Namespace) -> tuple[list[str], list, list[int]]:
    """The ``--split`` per ``--data``, the ``--model`` refs (first = baseline) and the ``--dims`` of a run."""
    splits = a.split or ["test"] * len(a.data)
    if len(splits) != len(a.data):
        ap.error("give one --split per --data (or none)")
    models = [parse_model_ref(m) for m in (a.model or ["base=all-MiniLM-L6-v2"])]
    return splits, models, [int(x) for x in a.dims.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_collection_args(ap, "384,192,96,48")
    ap.add_argument("--passage-tokens", default="256,128", help="passage sizes to try (comma-separated)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_passages.json"))
    a = ap.parse_args()
    splits, models, dims = collections_and_models(ap, a)
    sizes = [int(x) for x in a.passage_tokens.split(",")]
    load_before = os.getloadavg()
    rows = []
    for data, split in zip(a.data, splits, strict=True):
        ds = load_beir(data, split)
        t = time.time()
        base_cfg = EvaluateConfig(dims=dims, quantizations=["none"], latency=False, bm25=False, heldout=False)
        runs = {("document", None): evaluate_models([ds], models, base_cfg)}
        for size in sizes:
            cfg = base_cfg.model_copy(update={"score_by": "best_passage", "passage_tokens": size})
            runs[("best_passage", size)] = evaluate_models([ds], models, cfg)
        baseline = per_query(runs[("document", None)], models[0].label)
        for model in models:
            peers = {key: per_query(result, models[0].label) for key, result in runs.items()}
            by_doc = per_query(runs[("document", None)], model.label)
            for (scoring, size), result in runs.items():
                scores = per_query(result, model.label)
                n_passages = next(r["n_passages"] for r in result.rows if r["model"] == model.label)
                for d in dims:
                    same = paired_test(by_doc[d], scores[d])
                    first = paired_test(baseline[d], scores[d])
                    peer = paired_test(peers[(scoring, size)][d], scores[d])
                    rows.append({"collection": ds.name, "split": split, "queries": len(ds.query_ids),
                                 "model": model.label, "model_ref": model.ref, "score_by": scoring,
                                 "passage_tokens": size, "n_docs": len(ds.corpus_ids), "n_passages": n_passages,
                                 "dim": d, "ndcg_at_10": round(same["mean_candidate"], 4),
                                 "delta_vs_document": round(same["delta"], 4),
                                 "p_vs_document": round(same["p_value_randomization"], 4),
                                 f"delta_vs_{models[0].label}_document": round(first["delta"], 4),
                                 f"p_vs_{models[0].label}_document": round(first["p_value_randomization"], 4),
                                 f"delta_vs_{models[0].label}_same_scoring": round(peer["delta"], 4),
                                 f"p_vs_{models[0].label}_same_scoring": round(peer["p_value_randomization"], 4)})
        print(f"{ds.name}/{split}: {time.time() - t:.0f} s", flush=True)
    ref = models[0].label
    print(f"\n{'collection':<16}{'model':<10}{'scoring':<18}{'dim':>5}{'nDCG@10':>9}{'Δ doc':>8}{'p':>8}"
          f"{'Δ ' + ref + ' doc':>14}{'p':>8}{'Δ ' + ref + ' same':>15}{'p':>8}")
    for r in rows:
        scoring = r["score_by"] + (f"@{r['passage_tokens']}" if r["passage_tokens"] else "")
        print(f"{r['collection'] + '/' + r['split']:<16}{r['model']:<10}{scoring:<18}{r['dim']:>5}{r['ndcg_at_10']:>9.4f}"
              f"{r['delta_vs_document']:>+8.4f}{r['p_vs_document']:>8.4f}{r[f'delta_vs_{ref}_document']:>+14.4f}"
              f"{r[f'p_vs_{ref}_document']:>8.4f}{r[f'delta_vs_{ref}_same_scoring']:>+15.4f}"
              f"{r[f'p_vs_{ref}_same_scoring']:>8.4f}")
    write_rows(a.out, run_meta("bench_passages", ",".join(m.ref for m in models), load_before), rows)


if __name__ == "__main__":
    main()
