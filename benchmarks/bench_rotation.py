"""Corpus rotation (``train.corpus_rotation: pca``): nDCG@10 per Matryoshka dimension with and without it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_rotation.py \
        --data ~/.cache/embedforge/datasets/scifact --split train --data ~/.cache/embedforge/datasets/cranfield
    # get the collections first: embedforge datasets get scifact (and cranfield) [--from PATH]

For each BEIR collection, three models encode the corpus and the judged queries of ``--split``: the packaged
MiniLM (or ``--model``) as it is (``base``); with the corpus idf pooling weights the train stage adds
(``idf``, :mod:`embedforge.training.token_weights`); and that model rotated onto the principal axes of its
vectors of a seeded sample of the corpus (``idf+rotation``, :mod:`embedforge.training.corpus_rotation`) — what
the train stage saves by default when the guard keeps the base. Each is a saved model directory encoded through
the engine's encoder. Dense exact search; nDCG@10 per dimension (truncate + renormalize), and the change of
``idf+rotation`` vs ``idf`` and vs ``base`` with paired randomization p-values. Honest protocol: settings were
chosen on SciFact ``--split train`` and Cranfield; the SciFact test claims are run once. Prints a table and
writes JSON rows with the CPU model and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_token_weights import parse_collections, per_query_ndcg, run_meta, write_rows  # noqa: E402

from embedforge.data.beir import load_beir  # noqa: E402
from embedforge.encoding.encoder import Encoder  # noqa: E402
from embedforge.evaluation.metrics import paired_test  # noqa: E402
from embedforge.models import resolve_model  # noqa: E402
from embedforge.training.corpus_rotation import MAX_PASSAGES, rotate_saved_model  # noqa: E402
from embedforge.training.token_weights import weight_saved_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, default=MAX_PASSAGES, help="corpus sample the rotation is fitted on")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_rotation.json"))
    a, splits, dims = parse_collections(ap)
    load_before = os.getloadavg()
    base_dir = resolve_model(a.model)
    rows = []
    for data, split in zip(a.data, splits, strict=True):
        ds = load_beir(data, split)
        t = time.time()
        work = Path(tempfile.mkdtemp(prefix="rotation-"))
        try:
            shutil.copytree(base_dir, work / "idf")
            weight_saved_model(work / "idf", ds.corpus_texts, floor=0.5, power=0.5)
            shutil.copytree(work / "idf", work / "rotated")
            info = rotate_saved_model(work / "rotated", ds.corpus_texts, max_passages=a.passages, dims=dims)
            ndcg = {name: per_query_ndcg(Encoder(path, backend="torch"), ds, dims, (str(data), name))
                    for name, path in (("base", base_dir), ("idf", work / "idf"), ("idf+rotation", work / "rotated"))}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for d in dims:
            row = {"dataset": ds.name, "split": split, "queries": len(ds.query_ids), "dim": d,
                   "rotation_passages": info["passages"], "variance_share": info["variance_share"].get(str(d))}
            for name in ndcg:
                row[f"ndcg@10_{name}"] = round(sum(ndcg[name][d].values()) / len(ndcg[name][d]), 4)
            for ref in ("idf", "base"):
                test = paired_test(ndcg[ref][d], ndcg["idf+rotation"][d])
                row[f"delta_vs_{ref}"] = round(test["delta"], 4)
                row[f"p_vs_{ref}"] = round(test["p_value_randomization"], 4)
            rows.append(row)
        print(f"{ds.name}/{split}: {time.time() - t:.0f} s", flush=True)
    meta = run_meta("bench_rotation", a.model, load_before)
    print(f"\n{'dataset':10} {'split':6} {'dim':>4} {'base':>7} {'idf':>7} {'idf+rot':>7} {'Δ vs idf':>9} {'p':>6} "
          f"{'Δ vs base':>9} {'p':>6}")
    for r in rows:
        print(f"{r['dataset']:10} {r['split']:6} {r['dim']:4} {r['ndcg@10_base']:7.4f} {r['ndcg@10_idf']:7.4f} "
              f"{r['ndcg@10_idf+rotation']:7.4f} {r['delta_vs_idf']:+9.4f} {r['p_vs_idf']:6.4f} "
              f"{r['delta_vs_base']:+9.4f} {r['p_vs_base']:6.4f}")
    write_rows(a.out, meta, rows)


if __name__ == "__main__":
    main()
