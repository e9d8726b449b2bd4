"""Serving benchmark: bounded load runs against the real ``embedforge serve`` on 127.0.0.1.

    .venv/bin/python benchmarks/bench_serve.py --requests 500 --concurrency 16 --threads 1

Compares, in one run:
  - ``serve batched``:   the server with dynamic batching (max wait 5 ms, token budget 16384);
  - ``serve unbatched``: the same server with batching off (``--max-batch-tokens 1 --max-wait-ms 0``);
  - ``st sequential``:   SentenceTransformer.encode in-process, one request's texts per call (a naive server's
                         model time, without HTTP);
  - ``st batch 32``:     SentenceTransformer.encode in-process, 32 texts per call (the offline ceiling).
Both servers run side by side and the four modes take turns in ``--rounds`` rounds, so a change in the
load of a shared machine hits every mode alike; per-round throughputs are kept to show the spread. Texts are
the ADI queries and document titles (4-42 tokens). Prints a table; writes JSON rows with device, versions,
git SHA and load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from embedforge.models import resolve_model
from embedforge.runner import git_sha, library_versions
from embedforge.serving.loadgen import ServerProcess, run_load

ADI = Path(__file__).resolve().parents[1] / "engine" / "data" / "builtin" / "adi"
SERVER_MODES = {
    "serve batched": ["--max-wait-ms", "5"],
    "serve unbatched": ["--max-batch-tokens", "1", "--max-wait-ms", "0"],
}


def adi_texts() -> list[str]:
    texts = [json.loads(line)["text"] for line in (ADI / "queries.jsonl").read_text().splitlines() if line]
    for line in (ADI / "corpus.jsonl").read_text().splitlines():
        if line:
            row = json.loads(line)
            texts.append(row.get("title") or row["text"][:200])
    return [t.strip() for t in texts if t.strip()]


def server_counters(url: str) -> dict[str, float]:
    """Cumulative batching counters from the server's /metrics."""
    text = httpx.get(f"{url}/metrics").text

    def value(name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    return {
        "batches": value("embedforge_batch_requests_count"),
        "batched_requests": value("embedforge_batch_requests_sum"),
        "queue_wait_s": value("embedforge_queue_wait_seconds_sum"),
        "model_s": value("embedforge_model_seconds_sum"),
    }


class Tally:
    """Pooled results of one mode over the rounds."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.seconds = 0.0
        self.inputs = 0
        self.requests = 0
        self.errors = 0
        self.round_rates: list[float] = []

    def add(
        self, seconds: float, inputs: int, requests: int, latencies_ms: list[float], errors: int = 0
    ) -> None:
        self.seconds += seconds
        self.inputs += inputs
        self.requests += requests
        self.errors += errors
        self.latencies_ms += latencies_ms
        self.round_rates.append(round(inputs / seconds, 2))

    def row(self, mode: str) -> dict[str, Any]:
        ms = np.array(self.latencies_ms) if self.latencies_ms else None
        pct = (lambda q: round(float(np.percentile(ms, q)), 2)) if ms is not None else (lambda q: None)
        return {
            "mode": mode,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "inputs_per_s": round(self.inputs / self.seconds, 2),
            "round_inputs_per_s": self.round_rates,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument(
        "--requests", type=int, default=500, help="requests per server mode (over all rounds)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--inputs-per-request", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for the servers and the reference"
    )
    parser.add_argument("--out", default="benchmarks/results/bench_serve.json")
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    texts = adi_texts()
    per_round = args.requests // args.rounds
    k = args.inputs_per_request
    loadavg_start = os.getloadavg()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    st = SentenceTransformer(str(resolve_model(args.model)), device="cpu")
    tallies = {mode: Tally() for mode in [*SERVER_MODES, "st sequential", "st batch 32"]}
    counters: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        servers = {}
        for mode, extra in SERVER_MODES.items():
            flags = ["--threads", str(args.threads), "--max-inputs", str(max(k, 256)), *extra]
            log = Path(tempfile.gettempdir()) / f"bench_serve_{mode.split()[-1]}.log"
            servers[mode] = stack.enter_context(ServerProcess(args.model, flags, log_path=log))
            asyncio.run(
                run_load(servers[mode].url, texts, requests=32, concurrency=args.concurrency)
            )  # warm-up
            counters[mode] = server_counters(servers[mode].url)
        backend = httpx.get(f"{servers['serve batched'].url}/health").json()["backend"]
        print(f"server encoder backend: {backend}; reference: sentence-transformers torch")
        st.encode(texts[:32])
        for r in range(args.rounds):
            start = r * per_round * k
            batch_texts = [texts[(start + i) % len(texts)] for i in range(per_round * k)]
            for mode, server in servers.items():
                res = asyncio.run(
                    run_load(server.url, batch_texts, requests=per_round, concurrency=args.concurrency,
                             inputs_per_request=k, keep_latencies=True)
                )  # fmt: skip
                tallies[mode].add(
                    res["seconds"], res["completed"] * k, per_round, res["latencies_ms"], res["errors"]
                )
            calls = [batch_texts[i : i + k] for i in range(0, len(batch_texts), k)]
            latencies, t0 = [], time.perf_counter()
            for call in calls:
                t1 = time.perf_counter()
                st.encode(call, normalize_embeddings=True)
                latencies.append(1000 * (time.perf_counter() - t1))
            tallies["st sequential"].add(time.perf_counter() - t0, len(batch_texts), len(calls), latencies)
            t0 = time.perf_counter()
            st.encode(batch_texts, batch_size=32, normalize_embeddings=True)
            tallies["st batch 32"].add(time.perf_counter() - t0, len(batch_texts), len(calls), [])
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(f"{m} {t.round_rates[-1]}/s" for m, t in tallies.items())
            )
        for mode, server in servers.items():
            after, before = server_counters(server.url), counters[mode]
            counters[mode] = {key: after[key] - before[key] for key in after}

    rows = [tally.row(mode) for mode, tally in tallies.items()]
    ceiling = tallies["st batch 32"].inputs / tallies["st batch 32"].seconds
    for row in rows:
        row["ratio_vs_st_batch32"] = round(row["inputs_per_s"] / ceiling, 3)
        if row["mode"] in counters:
            c = counters[row["mode"]]
            row["model_batches"] = int(c["batches"])
            row["requests_per_batch"] = round(c["batched_requests"] / max(c["batches"], 1), 2)
            row["mean_queue_wait_ms"] = round(1000 * c["queue_wait_s"] / max(c["batched_requests"], 1), 2)
            row["model_busy_fraction"] = round(c["model_s"] / tallies[row["mode"]].seconds, 3)
    speedup = rows[0]["inputs_per_s"] / rows[1]["inputs_per_s"]
    header = (
        f"{'mode':<16} {'req':>5} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} {'inputs/s':>9} {'vs st b32':>9}"
    )
    print(header + f" {'req/batch':>9} {'model busy':>10}  per-round inputs/s")
    for row in rows:
        p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}"
        p99 = "-" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}"
        print(
            f"{row['mode']:<16} {row['requests']:>5} {row['errors']:>4} {p50:>8} {p99:>8} "
            f"{row['inputs_per_s']:>9.1f} "
            f"{row['ratio_vs_st_batch32']:>9.2f} {row.get('requests_per_batch', '-'):>9} "
            f"{row.get('model_busy_fraction', '-'):>10}  {row['round_inputs_per_s']}"
        )
    print(f"dynamic batching speed-up over unbatched serving: {speedup:.2f}x (same run, interleaved rounds)")
    report = {
        "benchmark": "serve",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_sha(),
        "device": "cpu",
        "versions": library_versions(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": loadavg_start,
            "loadavg_at_end": os.getloadavg(),
            "shared": True,
        },  # fmt: skip
        "config": {key: value for key, value in vars(args).items() if key != "out"},
        "texts": len(texts),
        "server_backend": backend,
        "batched_over_unbatched": round(speedup, 3),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
