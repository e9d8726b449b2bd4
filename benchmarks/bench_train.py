"""Training throughput: MultipleNegativesRankingLoss vs CachedMultipleNegativesRankingLoss at the same batch.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_train.py --batch-size 32 --steps 6

Both losses train the packaged all-MiniLM-L6-v2 in MatryoshkaLoss (384, 256, 128, 64) on the same SciFact
training pairs (claim → cited abstract, title + text) with the stage's own loss and trainer-argument builders,
one after the other in one process, so their ratio is fair on a shared machine. The first ``--warmup`` steps
are not timed. CachedMNRL computes the same loss with GradCache: constant memory whatever the batch, at the cost
of a second forward pass (expect it slower at a batch that fits in memory). Prints a table; writes JSON with
device, versions, git SHA and timestamp.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from embedforge import device as dev
from embedforge.configs.train import TrainConfig
from embedforge.data.datasets import require as require_dataset
from embedforge.models import resolve_model
from embedforge.runner import git_sha, library_versions

SCIFACT = require_dataset("scifact")  # embedforge datasets get scifact


def scifact_pairs(n: int) -> dict[str, list[str]]:
    """Up to ``n`` (claim, cited abstract) pairs from SciFact's training qrels."""
    corpus = {str(d["_id"]): f"{d['title']} {d['text']}" for d in
              map(json.loads, (SCIFACT / "corpus.jsonl").read_text().splitlines())}
    queries = {str(q["_id"]): q["text"] for q in map(json.loads, (SCIFACT / "queries.jsonl").read_text().splitlines())}
    anchors, positives, seen = [], [], set()
    for line in (SCIFACT / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        qid, did, _ = line.split("\t")
        if qid in seen or did not in corpus:
            continue
        seen.add(qid)
        anchors.append(queries[qid])
        positives.append(corpus[did])
        if len(anchors) == n:
            break
    return {"anchor": anchors, "positive": positives}


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.times.append(time.perf_counter() - self._t)


def measure(loss_name: str, pairs: dict[str, list[str]], args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

    from embedforge.training.arguments import training_arguments
    from embedforge.training.losses import build_loss

    cfg = TrainConfig(loss=loss_name, batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
                      max_steps=args.steps + args.warmup, precision=args.precision,
                      max_seq_length=args.max_seq_length)
    device = dev.device("auto")
    model = SentenceTransformer(str(resolve_model("all-MiniLM-L6-v2")), device=str(device), local_files_only=True)
    if cfg.max_seq_length:
        model.max_seq_length = cfg.max_seq_length
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        targs = training_arguments(cfg, output_dir=Path(tmp), device=device, seed=42, primary_metric=None)
        targs.save_strategy = "no"
        trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=Dataset.from_dict(pairs),
                                             loss=build_loss(model, cfg), callbacks=[timer])
        trainer.train()
    timed = timer.times[args.warmup:]
    seconds = sum(timed)
    return {"loss": loss_name, "batch_size": args.batch_size,
            "mini_batch_size": args.mini_batch_size if loss_name == "cached_mnrl" else None,
            "steps_timed": len(timed), "seconds": round(seconds, 2),
            "seconds_per_step": round(seconds / len(timed), 3), "steps_per_s": round(len(timed) / seconds, 4),
            "examples_per_s": round(len(timed) * args.batch_size / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mini-batch-size", type=int, default=16, help="CachedMNRL mini-batch")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per loss")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps per loss")
    parser.add_argument("--max-seq-length", type=int, default=None, help="training truncation (default: model's)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_train.json"))
    args = parser.parse_args()
    dev.set_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    pairs = scifact_pairs(args.batch_size * (args.steps + args.warmup))
    rows = [measure(name, pairs, args) for name in ("mnrl", "cached_mnrl")]
    ratio = rows[1]["seconds_per_step"] / rows[0]["seconds_per_step"]
    header = f"{'loss':<14}{'batch':>7}{'mini':>6}{'steps':>7}{'s/step':>9}{'steps/s':>10}{'examples/s':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['loss']:<14}{r['batch_size']:>7}{r['mini_batch_size'] or '':>6}{r['steps_timed']:>7}"
              f"{r['seconds_per_step']:>9.2f}{r['steps_per_s']:>10.3f}{r['examples_per_s']:>12.1f}")
    print(f"cached_mnrl / mnrl time per step: {ratio:.2f}x")
    result = {"benchmark": "bench_train", "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
              "git": git_sha(), "device": str(dev.device("auto")), "threads": os.environ.get("OMP_NUM_THREADS"),
              "cpu_count": os.cpu_count(), "shared_machine_load": os.getloadavg(),
              "versions": library_versions(), "args": {k: str(v) for k, v in vars(args).items()},
              "rows": rows, "cached_over_mnrl_time_per_step": round(ratio, 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
