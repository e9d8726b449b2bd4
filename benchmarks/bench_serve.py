"""Serving benchmark: a bounded load run against the real ``embedforge serve`` on 127.0.0.1.

    .venv/bin/python benchmarks/bench_serve.py --requests 500 --concurrency 16 --threads 1

Runs, in one process and one sitting, so the ratios are fair on a shared machine:
  - ``serve batched``:   the server with dynamic batching (max wait 5 ms, token budget 16384);
  - ``serve unbatched``: the same server with batching off (``--max-batch-tokens 1 --max-wait-ms 0``);
  - ``st sequential``:   SentenceTransformer.encode in-process, one request's texts per call (a naive server's
                         model time, without HTTP);
  - ``st batch 32``:     SentenceTransformer.encode in-process, 32 texts per call (the offline ceiling).
Texts are the ADI queries and document titles (short, 5–60 tokens). Prints a table; writes JSON rows with
device, versions, git SHA and timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models import resolve_model  # noqa: E402
from engine.runner import _git_sha, library_versions  # noqa: E402
from engine.serving.loadgen import ServerProcess, run_load  # noqa: E402

ADI = Path(__file__).resolve().parents[1] / "engine" / "data" / "builtin" / "adi"


def adi_texts() -> list[str]:
    texts = [json.loads(line)["text"] for line in (ADI / "queries.jsonl").read_text().splitlines() if line]
    for line in (ADI / "corpus.jsonl").read_text().splitlines():
        if line:
            row = json.loads(line)
            texts.append(row.get("title") or row["text"][:200])
    return [t.strip() for t in texts if t.strip()]


def reference(model: str, texts: list[str], requests: int, per_request: int, threads: int) -> list[dict[str, Any]]:
    """In-process SentenceTransformer.encode over the same texts: per-request calls and batches of 32."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = SentenceTransformer(str(resolve_model(model)), device="cpu")
    calls = [[texts[(i * per_request + j) % len(texts)] for j in range(per_request)] for i in range(requests)]
    st.encode(calls[0])
    rows = []
    start = time.perf_counter()
    latencies = []
    for call in calls:
        t0 = time.perf_counter()
        st.encode(call, normalize_embeddings=True)
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    import numpy as np

    ms = np.array(latencies) * 1000
    rows.append({"mode": "st sequential", "requests": requests, "errors": 0, "seconds": round(seconds, 3),
                 "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
                 "inputs_per_s": round(requests * per_request / seconds, 2)})
    flat = [t for call in calls for t in call]
    start = time.perf_counter()
    st.encode(flat, batch_size=32, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    rows.append({"mode": "st batch 32", "requests": requests, "errors": 0, "seconds": round(seconds, 3),
                 "p50_ms": None, "p99_ms": None, "inputs_per_s": round(len(flat) / seconds, 2)})
    return rows


def serve_run(model: str, texts: list[str], args: argparse.Namespace, extra: list[str], mode: str) -> dict[str, Any]:
    flags = ["--threads", str(args.threads), "--max-inputs", str(max(args.inputs_per_request, 256)), *extra]
    log = Path(tempfile.gettempdir()) / f"bench_serve_{mode.split()[-1]}.log"
    with ServerProcess(model, flags, log_path=log) as server:
        asyncio.run(run_load(server.url, texts, requests=min(32, args.requests), concurrency=args.concurrency,
                             inputs_per_request=args.inputs_per_request))  # warm-up
        before = server_metrics(server.url)
        result = asyncio.run(run_load(server.url, texts, requests=args.requests, concurrency=args.concurrency,
                                      inputs_per_request=args.inputs_per_request))
        after = server_metrics(server.url)
    batches = after["batches"] - before["batches"]
    return {"mode": mode, **result, "model_batches": int(batches),
            "requests_per_batch": round((after["batched_requests"] - before["batched_requests"]) / max(batches, 1), 2),
            "mean_queue_wait_ms": round(1000 * (after["queue_wait_s"] - before["queue_wait_s"])
                                        / max(after["batched_requests"] - before["batched_requests"], 1), 2),
            "model_busy_fraction": round((after["model_s"] - before["model_s"]) / result["seconds"], 3)}


def server_metrics(url: str) -> dict[str, float]:
    """Cumulative batching counters from the server's /metrics."""
    import re

    import httpx

    text = httpx.get(f"{url}/metrics").text

    def value(name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    return {"batches": value("embedforge_batch_requests_count"),
            "batched_requests": value("embedforge_batch_requests_sum"),
            "queue_wait_s": value("embedforge_queue_wait_seconds_sum"),
            "model_s": value("embedforge_model_seconds_sum")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--inputs-per-request", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for server and reference")
    parser.add_argument("--skip-unbatched", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/bench_serve.json")
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    texts = adi_texts()
    env_note = {"cpu_count": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    rows = [serve_run(args.model, texts, args, ["--max-wait-ms", "5"], "serve batched")]
    if not args.skip_unbatched:
        rows.append(serve_run(args.model, texts, args, ["--max-batch-tokens", "1", "--max-wait-ms", "0"],
                              "serve unbatched"))
    rows += reference(args.model, texts, args.requests, args.inputs_per_request, args.threads)
    ceiling = rows[-1]["inputs_per_s"]
    print(f"{'mode':<16} {'req':>5} {'err':>4} {'p50 ms':>9} {'p99 ms':>9} {'inputs/s':>9} {'vs st b32':>9} "
          f"{'req/batch':>9} {'model busy':>10}")
    for row in rows:
        row["ratio_vs_st_batch32"] = round(row["inputs_per_s"] / ceiling, 3)
        p50 = "-" if row.get("p50_ms") is None else f"{row['p50_ms']:.1f}"
        p99 = "-" if row.get("p99_ms") is None else f"{row['p99_ms']:.1f}"
        print(f"{row['mode']:<16} {row['requests']:>5} {row['errors']:>4} {p50:>9} {p99:>9} "
              f"{row['inputs_per_s']:>9.1f} {row['ratio_vs_st_batch32']:>9.2f} {row.get('requests_per_batch', '-'):>9} "
              f"{row.get('model_busy_fraction', '-'):>10}")
    report = {"benchmark": "serve", "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
              "git": _git_sha(), "device": "cpu", "versions": library_versions(),
              "machine": {**env_note, "loadavg_at_end": os.getloadavg(), "shared": True},
              "config": {k: v for k, v in vars(args).items() if k != "out"}, "texts": len(texts), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
