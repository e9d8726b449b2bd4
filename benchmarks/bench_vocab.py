"""Does vocabulary extension help? Token-to-word ratio and nDCG@10 on a BEIR collection (SciFact by default).

    .venv/bin/python benchmarks/bench_vocab.py                       # full SciFact (~15 min on 2 CPU cores)
    .venv/bin/python benchmarks/bench_vocab.py --max-docs 1500 --train-pairs 256   # quick look

Arms, all evaluated on the test queries over the same corpus with the one encoder and search API:
(a) the base model; (b) the base model + vocabulary extension (top-N fragmented corpus terms, mean-of-pieces
init), no training; (c) both fine-tuned on the same data budget — MNRL on the collection's train queries and their
qrels/train.tsv positives, same pairs, order, seed and hyper-parameters. Also the token-to-word ratio of the corpus
before/after extension and nDCG@10 on the test queries that contain an added term (where extension can matter).
Prints a table and writes JSON rows with device, versions, git SHA and timestamp.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedforge.data.beir import BeirDataset, load_beir
from embedforge.runner import git_sha, library_versions
from embedforge.training.vocab_extension import extend_model
from embedforge.vocab.analysis import analyze, load_tokenizer, words

REPO = Path(__file__).resolve().parents[1]


def ndcg_at_10(data: BeirDataset, corpus_vectors: np.ndarray, query_vectors: np.ndarray,
               query_subset: set[str] | None = None) -> float:
    """Mean nDCG@10 over the judged test queries (or a subset), via the project's metrics (pytrec_eval)."""
    from embedforge.evaluation.metrics import evaluate_run, run_from_rankings
    from embedforge.search.index import search

    _, ids = search(query_vectors, corpus_vectors, k=100)
    rankings = [[data.corpus_ids[i] for i in row] for row in ids]
    keep = [i for i, q in enumerate(data.query_ids) if query_subset is None or q in query_subset]
    if not keep:
        return float("nan")
    qids = [data.query_ids[i] for i in keep]
    run = run_from_rankings(qids, [rankings[i] for i in keep])
    return evaluate_run({q: data.qrels[q] for q in qids}, run).aggregate["ndcg_at_10"]


def encode_and_score(model_dir: str | Path, data: BeirDataset, subset: set[str],
                     max_seq_length: int | None = None) -> dict[str, float]:
    from embedforge.encoding.encoder import Encoder

    encoder = Encoder(model_dir, device="cpu", max_seq_length=max_seq_length)
    t0 = time.perf_counter()
    corpus = encoder.encode(data.corpus_texts)
    queries = encoder.encode(data.query_texts)
    seconds = time.perf_counter() - t0
    return {"ndcg_at_10": ndcg_at_10(data, corpus, queries),
            "ndcg_at_10_queries_with_added_terms": ndcg_at_10(data, corpus, queries, subset),
            "encode_seconds": round(seconds, 1)}


def fine_tune(model_dir: str | Path, pairs: list[tuple[str, str]], out_dir: Path, args: argparse.Namespace) -> float:
    """MNRL, one pass over ``pairs`` (fixed order and seed); returns seconds. Saves to ``out_dir``."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    torch.manual_seed(args.seed)
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.max_seq_length = args.max_seq_length
    train = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, warmup_steps=0.1, lr_scheduler_type="linear", seed=args.seed, data_seed=args.seed,
        save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, logging_steps=10)
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train,
                                         loss=MultipleNegativesRankingLoss(model))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model.save(str(out_dir))
    return seconds


def subset_corpus(data: BeirDataset, keep_ids: set[str], max_docs: int | None, seed: int) -> BeirDataset:
    """All judged documents plus random others up to ``max_docs`` (for quick runs)."""
    if not max_docs or max_docs >= len(data.corpus_ids):
        return data
    others = [i for i, d in enumerate(data.corpus_ids) if d not in keep_ids]
    random.Random(seed).shuffle(others)
    chosen = sorted([i for i, d in enumerate(data.corpus_ids) if d in keep_ids] +
                    others[:max(0, max_docs - len(keep_ids))])
    return BeirDataset(data.name, [data.corpus_ids[i] for i in chosen], [data.corpus_texts[i] for i in chosen],
                       data.query_ids, data.query_texts, data.qrels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beir:scifact")  # embedforge datasets get scifact
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--top-n", type=int, default=500, help="terms added by the extension")
    parser.add_argument("--min-pieces", type=int, default=3)
    parser.add_argument("--min-frequency", type=int, default=5)
    parser.add_argument("--max-docs", type=int, default=None, help="corpus subset for quick runs")
    parser.add_argument("--train-pairs", type=int, default=None, help="limit the fine-tuning pairs")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-seq-length", type=int, default=256, help="tokens read when training and encoding")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-train", action="store_true", help="only arms (a) and (b)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench" / "bench_vocab.json"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    test = load_beir(args.dataset, "test")
    train = load_beir(args.dataset, "train")
    judged = {d for qrels in (test.qrels, train.qrels) for q in qrels.values() for d in q}
    data = subset_corpus(test, judged, args.max_docs, args.seed)
    texts = dict(zip(data.corpus_ids, data.corpus_texts, strict=True))
    pairs = [(train.query_texts[i], texts[d]) for i, q in enumerate(train.query_ids)
             for d in sorted(train.qrels[q]) if d in texts]
    random.Random(args.seed).shuffle(pairs)
    pairs = pairs[:args.train_pairs] if args.train_pairs else pairs

    work = Path(tempfile.mkdtemp(prefix="bench_vocab_"))
    base = load_tokenizer(args.model, name="base")
    t0 = time.perf_counter()
    analysis = analyze([data.corpus_texts], [base])
    analysis_seconds = time.perf_counter() - t0
    terms = analysis.fragmented_terms(min_pieces=args.min_pieces, top=args.top_n, min_frequency=args.min_frequency)
    t0 = time.perf_counter()
    ext = extend_model(args.model, [t.term for t in terms], work / "extended", min_pieces=args.min_pieces)
    extend_seconds = time.perf_counter() - t0
    after = analyze([data.corpus_texts], [base, load_tokenizer(work / "extended", name="extended")])
    added = {a.term for a in ext.added}
    norm = base.normalize
    with_terms = {q for q, text in zip(data.query_ids, data.query_texts, strict=True)
                  if any(norm(w) in added for w in words(text))}

    print(f"ratio {after.tokenizers[0].ratio:.4f} → {after.tokenizers[1].ratio:.4f}; {len(ext.added)} terms added; "
          f"{len(with_terms)} test queries contain one", flush=True)
    rows: dict[str, dict[str, Any]] = {}

    def done(name: str, row: dict[str, Any]) -> None:
        rows[name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)

    done("a_base", encode_and_score(args.model, data, with_terms, args.max_seq_length))
    done("b_extended_untrained", encode_and_score(work / "extended", data, with_terms, args.max_seq_length))
    if not args.skip_train:
        from embedforge.models import resolve_model

        for name, start in (("c_finetuned_base", args.model), ("c_finetuned_extended", work / "extended")):
            seconds = fine_tune(resolve_model(str(start)), pairs, work / name, args)
            scores = encode_and_score(work / name, data, with_terms, args.max_seq_length)
            done(name, {**scores, "train_seconds": round(seconds, 1)})

    ratio_before, ratio_after = (s.ratio for s in after.tokenizers)
    print(f"\n{data.name}: {len(data.corpus_ids)} docs, {len(data.query_ids)} test queries "
          f"({len(with_terms)} contain an added term), {len(pairs)} training pairs, {len(ext.added)} terms added")
    print(f"token-to-word ratio: base {ratio_before:.4f} → extended {ratio_after:.4f}   "
          f"(analysis {analysis_seconds:.1f}s, {analysis.words / analysis_seconds:,.0f} words/s; "
          f"extension {extend_seconds:.1f}s)")
    print(f"{'arm':28s} {'nDCG@10':>8s} {'nDCG@10 (queries w/ terms)':>27s} {'encode s':>9s} {'train s':>8s}")
    for name, r in rows.items():
        print(f"{name:28s} {r['ndcg_at_10']:8.4f} {r['ndcg_at_10_queries_with_added_terms']:27.4f} "
              f"{r['encode_seconds']:9.1f} {r.get('train_seconds', float('nan')):8.1f}")
    record = {"benchmark": "bench_vocab", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "git": git_sha(), "device": "cpu", "threads": torch.get_num_threads(), "cpu_shared": True,
              "versions": library_versions(), "args": vars(args), "dataset": data.name,
              "docs": len(data.corpus_ids), "test_queries": len(data.query_ids),
              "queries_with_added_terms": len(with_terms), "train_pairs": len(pairs), "terms_added": len(ext.added),
              "first_terms": [a.term for a in ext.added[:20]], "ratio_before": round(ratio_before, 4),
              "ratio_after": round(ratio_after, 4), "analysis_words_per_s": round(analysis.words / analysis_seconds),
              "arms": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
