"""Does the train stage's dev score say what the held-out queries will say? For each finished run, the tuned − base
gain three ways: as the train stage measured it on its validation search (the guard's scores), on the same dev
queries scored as the evaluate stage scores held-out ones (an ``embedforge evaluate --split <judged_split>`` output
holding ``base`` and each run's label), and on the held-out queries (the run's evaluate stage).

    embedforge evaluate -m base=all-MiniLM-L6-v2 -m mixed120=RUN/train-A/model -m mixed240=RUN/train-B/model \\
        --dataset DATASET --split train-dev --score-by best_passage --passage-tokens 128 --dims 384,96 \\
        --quant none --no-latency -o DEV_EVAL
    python benchmarks/dev_fidelity.py DEV_EVAL --run mixed120=RUN/train-A,RUN/evaluate-A \\
        --run mixed240=RUN/train-B,RUN/evaluate-B --compare mixed120:mixed240 \\
        --out benchmarks/results/scifact_dev_fidelity.json

A dev score is a yardstick when its gains match the held-out ones; one that overstates them picks checkpoints and
settings that do not carry over. ``--compare A:B`` adds paired tests between models of the dev evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

from embedforge.device import cpu_model
from embedforge.evaluation.metrics import paired_test


def per_query(evaluate_dir: Path) -> dict[tuple[str, int], dict[str, float]]:
    """``(model, dim) → {query: nDCG@10}`` of an evaluate output (``per_query.jsonl``, else its ``partial/``)."""
    rows: list[dict] = []
    if (evaluate_dir / "per_query.jsonl").exists():
        rows = [json.loads(line) for line in (evaluate_dir / "per_query.jsonl").read_text().splitlines()]
    else:
        for part in sorted((evaluate_dir / "partial").glob("*.json")):
            rows += json.loads(part.read_text())["per_query"]
    scores: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row.get("quantization", "none") == "none" and row["dim"] is not None:
            scores[(row["model"], row["dim"])][row["query_id"]] = row["ndcg_at_10"]
    return scores


def stage_gain(train_dir: Path) -> dict:
    """The train stage's own tuned − base on its validation search, at its primary dimension."""
    manifest = json.loads((train_dir / "manifest.json").read_text())
    guard, dim = manifest["guard"], str(manifest["guard"]["primary_dim"])
    return {"dim": int(dim), "signal": guard["signal"], "base": guard["scores"]["base"][dim],
            "tuned": guard["scores"]["tuned"][dim], "delta": guard["scores"]["tuned"][dim] - guard["scores"]["base"][dim],
            "kept": manifest["training"]["best"], "max_steps": manifest["config"]["max_steps"]}


def heldout_gain(evaluate_dir: Path, dim: int) -> dict:
    """The evaluate stage's own paired test of ``tuned`` vs ``base`` at ``dim``."""
    tests = json.loads((evaluate_dir / "significance.json").read_text())["tests"]
    return next(t for t in tests if t["model"] == "tuned" and t["reference"] == "base" and t["dim"] == dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dev_eval", type=Path, help="an `embedforge evaluate --split <judged_split>` output dir")
    parser.add_argument("--run", action="append", default=[], required=True,
                        help="LABEL=TRAIN_DIR,EVALUATE_DIR (LABEL: the run's model label in the dev evaluation)")
    parser.add_argument("--compare", action="append", default=[], help="A:B, two models of the dev evaluation")
    parser.add_argument("--base", default="base", help="the base model's label in the dev evaluation")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    dev = per_query(args.dev_eval)
    runs = {}
    print("| run | dim | train stage's dev gain | dev queries, scored as evaluate does | held-out queries |")
    print("|---|---:|---:|---:|---:|")
    for spec in args.run:
        label, dirs = spec.split("=", 1)
        train_dir, evaluate_dir = (Path(p) for p in dirs.split(","))
        stage = stage_gain(train_dir)
        dims = sorted({d for m, d in dev if m == label}, reverse=True)
        runs[label] = {"train_dir": str(train_dir), "evaluate_dir": str(evaluate_dir), "train_stage": stage,
                       "dev": {}, "heldout": {}}
        for dim in dims:
            runs[label]["dev"][dim] = paired_test(dev[(args.base, dim)], dev[(label, dim)])
            runs[label]["heldout"][dim] = heldout_gain(evaluate_dir, dim)
            d, h = runs[label]["dev"][dim], runs[label]["heldout"][dim]
            own = f"{stage['delta']:+.4f}" if dim == stage["dim"] else "–"
            print(f"| {label} | {dim} | {own} | {d['delta']:+.4f} (p {d['p_value_randomization']:.3f}) | "
                  f"{h['delta']:+.4f} (p {h['p_value_randomization']:.3f}) |")
    compared = {}
    for pair in args.compare:
        a, b = pair.split(":", 1)
        for dim in sorted({d for m, d in dev if m == a} & {d for m, d in dev if m == b}, reverse=True):
            test = paired_test(dev[(a, dim)], dev[(b, dim)])
            compared[f"{b} vs {a} @{dim}"] = test
            print(f"dev queries, {b} − {a} at {dim} d: {test['delta']:+.4f} (p {test['p_value_randomization']:.3f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"dev_eval": str(args.dev_eval), "cpu": cpu_model(),
                                        "load_average": os.getloadavg(), "runs": runs, "compared": compared},
                                       indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
