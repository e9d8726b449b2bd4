"""Where does a tuned model's gain go? Split the test queries of a finished evaluate stage by whether one of their
relevant documents was also relevant to a query the model was trained on, and test tuned vs base in each group.

    python benchmarks/gain_by_seen_docs.py RUN/evaluate-* --train-qrels DATASET/qrels/train-heldout.tsv \\
        --test-qrels DATASET/qrels/test.tsv --out benchmarks/results/scifact_gain_by_seen_docs.json

A model that learned a transferable query → passage mapping gains in both groups; one that learned the trained
documents gains where the test query's document was trained on and not elsewhere. Reads the stage's
``per_query.jsonl`` (nothing is re-scored); the paired randomization test is the evaluate stage's own.

Where the stage kept its rankings (``runs/<dataset>/<model>-d<dim>.trec``), it also prints how much of each
group's top 10 is trained documents that are not relevant to the query: if training made the trained documents
crowd the others out, that share rises from base to tuned.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from embedforge.data.beir import load_qrels
from embedforge.evaluation.metrics import paired_test


def relevant_docs(path: Path) -> dict[str, set[str]]:
    return {q: set(docs) for q, docs in load_qrels(path).items()}  # load_qrels keeps grades > 0 only


def top_docs(trec: Path, k: int) -> dict[str, list[str]]:
    """Each query's first ``k`` documents of a TREC run file (``qid Q0 doc rank score tag``)."""
    ranked: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in trec.read_text().splitlines():
        qid, _, doc, rank, *_ = line.split()
        ranked[qid].append((int(rank), doc))
    return {q: [d for _, d in sorted(docs)[:k]] for q, docs in ranked.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluate_dir", type=Path, help="a finished evaluate stage directory (per_query.jsonl)")
    parser.add_argument("--train-qrels", type=Path, required=True, help="the qrels the model was trained on")
    parser.add_argument("--test-qrels", type=Path, required=True, help="the qrels the evaluate stage scored")
    parser.add_argument("--base", default="base")
    parser.add_argument("--tuned", default="tuned")
    parser.add_argument("--metric", default="ndcg_at_10")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    trained = set().union(*relevant_docs(args.train_qrels).values())
    test = relevant_docs(args.test_qrels)
    scores: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for line in (args.evaluate_dir / "per_query.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["model"] in (args.base, args.tuned) and row.get("quantization", "none") == "none":
            scores[(row["model"], row["dim"])][row["query_id"]] = row[args.metric]
    groups = {"a relevant document was trained on": {q for q, docs in test.items() if docs & trained},
              "no relevant document was trained on": {q for q, docs in test.items() if docs and not docs & trained}}
    rows, crowding = [], []
    print(f"| dim | group | queries | {args.base} | {args.tuned} | Δ | p |\n|---:|---|---:|---:|---:|---:|---:|")
    for dim in sorted({d for _, d in scores}, reverse=True):
        base, tuned = scores.get((args.base, dim), {}), scores.get((args.tuned, dim), {})
        for name, queries in groups.items():
            qs = sorted(queries & base.keys() & tuned.keys())
            if not qs:
                continue
            test_result = paired_test({q: base[q] for q in qs}, {q: tuned[q] for q in qs})
            rows.append({"dim": dim, "group": name, **test_result})
            print(f"| {dim} | {name} | {len(qs)} | {test_result['mean_reference']:.4f} | "
                  f"{test_result['mean_candidate']:.4f} | {test_result['delta']:+.4f} | "
                  f"{test_result['p_value_randomization']:.3f} |")
    for trec in sorted(args.evaluate_dir.glob("runs/*/*-d*.trec")):
        model, dim = trec.stem.rsplit("-d", 1)
        if model not in (args.base, args.tuned):
            continue
        top = top_docs(trec, 10)
        for name, queries in groups.items():
            qs = sorted(queries & top.keys())
            if qs:
                share = sum(len([d for d in top[q] if d in trained and d not in test[q]]) for q in qs) / (10 * len(qs))
                crowding.append({"model": model, "dim": int(dim), "group": name, "queries": len(qs),
                                 "trained_not_relevant_share_of_top10": share})
    if crowding:
        print("\n| model | dim | group | trained, not relevant, share of top 10 |\n|---|---:|---|---:|")
        for c in crowding:
            print(f"| {c['model']} | {c['dim']} | {c['group']} | {c['trained_not_relevant_share_of_top10']:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"evaluate_dir": str(args.evaluate_dir), "train_qrels": str(args.train_qrels),
                                        "test_qrels": str(args.test_qrels), "metric": args.metric,
                                        "trained_documents": len(trained), "rows": rows,
                                        "crowding": crowding}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
