"""Re-embedding at scale: generated short passages through the local executor and a local Ray cluster.

    .venv/bin/python benchmarks/bench_scale.py                                   # 1M passages (hours on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --rows 20000 --shard-rows 2000    # what fits in minutes

The corpus is ``--rows`` generated passages (``--words`` random words each, ids ``p<n>``) in Parquet files of
``--shard-rows`` rows, so one input file is one output shard. Each mode runs in its own process tree:

- ``local``: ``embed_blocks`` in one process with ``--threads`` torch threads;
- ``ray1`` / ``ray2``: ``embed_with_ray`` on a Ray cluster started for the run with ``--threads`` CPUs and 1 or
  2 encoder actors (the pool sizing keeps a CPU share for the reads, see ``engine/distributed/pool.py``);
- ``resume`` (after ``ray1``): the ``ray1`` run again into a fresh directory, killed (SIGKILL to its process
  group: driver, raylet, actors) once ``--kill-at`` of the shards are written, then rerun. Reported: shards
  kept, seconds from the restart to the first new shard, the rerun's total, and whether its ids, order and
  vectors equal the uninterrupted local run's.

Per mode: rows/s, wall seconds, peak RSS of the driver and of the largest other process of the tree (an
actor, the raylet; sampled every 0.5 s with psutil) with its trail as shards land (``peak_rss_by_rows``) and
``rss_growth`` (peak at the end over the peak at 100k rows), and for Ray the scaling efficiency
``rate(ray2) / (2 x rate(ray1))``. Results go to ``benchmarks/results/bench_scale.json`` with the CPU model,
load average and git sha. On a machine with fewer than 4 cores, 2 actors share the cores the one actor had,
so the efficiency there measures overhead, not scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.runner import git_sha, library_versions

REPO = Path(__file__).resolve().parents[1]
WORDS = ("protein cell gene wing flow heat pressure vitamin sleep river model data study trial dose risk "
         "patient cancer brain blood growth signal energy light water carbon drug effect level rate").split()


def make_corpus(root: Path, rows: int, shard_rows: int, words: int) -> Path:
    """``rows`` passages in Parquet files of ``shard_rows`` rows (written once, reused)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = root / f"corpus-{rows}-{shard_rows}-{words}"
    if (done / "_SUCCESS").exists():
        return done
    done.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    vocab = np.array(WORDS)
    for f, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        picks = vocab[rng.integers(0, len(vocab), size=(n, words))]
        pq.write_table(pa.table({"id": [f"p{start + i}" for i in range(n)], "text": [" ".join(r) for r in picks]}),
                       done / f"part-{f:05d}.parquet")
    (done / "_SUCCESS").write_text("ok\n")
    return done


def child(mode: str, source: str, out: str, threads: int, shard_rows: int, backend: str, batch_rows: int,
          window_rows: int | None) -> None:
    """One run in this process (and, for Ray, the cluster it starts); prints its counters as JSON."""
    from embedforge.encoding.bulk_embed import OutputOptions, embed_blocks, iter_blocks

    opts = OutputOptions(dims=[384], keep_text=False)
    t0 = time.perf_counter()
    if mode == "local":
        import torch

        from embedforge.encoding.encoder import Encoder

        torch.set_num_threads(threads)
        encoder = Encoder("all-MiniLM-L6-v2", device="cpu", backend=backend)
        totals = embed_blocks(encoder, iter_blocks(source, "parquet", shard_rows), Path(out), opts, cache=False)
    else:
        import ray

        from embedforge.distributed.ray_embed import embed_with_ray
        from embedforge.models import resolve_model

        ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
        totals = embed_with_ray(source, Path(out), str(resolve_model("all-MiniLM-L6-v2")), opts, fmt="parquet",
                                shard_rows=shard_rows, actors=int(mode[-1]), device="cpu", backend=backend,
                                batch_rows=batch_rows, **({"window_rows": window_rows} if window_rows else {}))
        ray.shutdown()
    print(json.dumps({**totals, "seconds": time.perf_counter() - t0}), flush=True)


def _spawn(mode: str, source: Path, out: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"})
    return subprocess.Popen([sys.executable, "-P", __file__, "--child", mode, "--source", str(source), "--child-out",
                             str(out), "--threads", str(args.threads), "--shard-rows", str(args.shard_rows),
                             "--batch-rows", str(args.batch_rows), "--window-rows", str(args.window_rows or 0),
                             "--backend", args.backend], env=env, stdout=open(out.parent / f"{mode}.stdout", "w"),
                            stderr=open(out.parent / f"{mode}.stderr", "w"), text=True, start_new_session=True)
    # files, not pipes: nobody reads a pipe while the run lasts, and Ray Data's progress log fills one (64 KiB)
    # within minutes, after which the child blocks on its next log line


class TreeRss:
    """Peak RSS of a process and of the largest of its descendants, sampled."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.driver = self.other = 0

    def sample(self) -> None:
        import psutil

        try:
            self.driver = max(self.driver, self.root.memory_info().rss)
            for proc in self.root.children(recursive=True):
                try:
                    self.other = max(self.other, proc.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass


def _shards(out: Path) -> int:
    return len(list((out / "shards").glob("part-*.parquet"))) if (out / "shards").is_dir() else 0


def run_mode(mode: str, source: Path, out: Path, args: argparse.Namespace, kill_after: int | None = None,
             ) -> dict[str, Any]:
    """Run one mode to the end (or until ``kill_after`` shards exist, then SIGKILL its process group)."""
    proc = _spawn(mode, source, out, args)
    rss = TreeRss(proc.pid)
    t0 = time.perf_counter()
    first_new, before = None, _shards(out)
    seen, trail = before, []  # (rows written, peak RSS so far) each time a shard lands: does memory grow with rows?
    while proc.poll() is None:
        rss.sample()
        now = _shards(out)
        if first_new is None and now > before:
            first_new = time.perf_counter() - t0
        if now > seen:
            seen = now
            trail.append([min(now * args.shard_rows, args.rows), round(rss.driver / 2**20, 1),
                          round(rss.other / 2**20, 1)])
        if kill_after is not None and now >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"killed_after_s": round(time.perf_counter() - t0, 1), "shards_at_kill": _shards(out),
                    "killed_peak_rss_driver_mib": round(rss.driver / 2**20, 1),
                    "killed_peak_rss_other_mib": round(rss.other / 2**20, 1)}
        time.sleep(0.5)
    proc.wait()
    stdout = (out.parent / f"{mode}.stdout").read_text()
    stderr = (out.parent / f"{mode}.stderr").read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    rows = args.rows
    return {"mode": mode, "rows": rows, "seconds": round(result["seconds"], 1),
            "rows_per_s": round(result["rows_embedded"] / max(result["seconds"], 1e-9), 1),
            "rows_embedded": result["rows_embedded"], "shards_written": result["shards_written"],
            "shards_skipped": result.get("shards_skipped", 0),
            "first_new_shard_s": round(first_new, 1) if first_new is not None else None,
            "peak_rss_driver_mib": round(rss.driver / 2**20, 1), "peak_rss_other_mib": round(rss.other / 2**20, 1),
            "rss_growth": _growth(trail, args), "peak_rss_by_rows": trail}


def _growth(trail: list[list[float]], args: argparse.Namespace) -> dict[str, Any] | None:
    """Peak RSS (driver + largest other process) at the end over the same once 100k rows (half of a smaller
    corpus; at least two shards) were written: 1.0 means memory did not grow with the corpus."""
    mark = max(min(100_000, args.rows // 2), 2 * args.shard_rows)
    early = [t for t in trail if t[0] >= mark]
    if len(early) < 2:
        return None
    first, last = early[0], early[-1]
    return {"from_rows": first[0], "to_rows": last[0],
            "ratio": round((last[1] + last[2]) / max(first[1] + first[2], 1e-9), 3)}


def same_output(a: Path, b: Path) -> dict[str, Any]:
    """Shard names, ids and order equal; min cosine of the vectors."""
    from embedforge.data.shards import list_shards, read_table

    ta, tb = read_table(a), read_table(b)
    names = [p.name for p in list_shards(a)] == [p.name for p in list_shards(b)]
    ids = ta.column("id").to_pylist() == tb.column("id").to_pylist()
    cos = None
    if ids:
        va = ta.column("vector").combine_chunks().flatten().to_numpy().reshape(ta.num_rows, -1)
        vb = tb.column("vector").combine_chunks().flatten().to_numpy().reshape(tb.num_rows, -1)
        cos = round(float((va * vb).sum(1).min()), 7)
    return {"same_shard_names": names, "same_ids_and_order": ids, "min_cosine": cos}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--words", type=int, default=12, help="words per generated passage")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (local) / Ray CPUs")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--modes", default="local,ray1,ray2,resume")
    parser.add_argument("--kill-at", type=float, default=0.5, help="resume: kill after this share of shards")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "embedforge-bench-scale")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_scale.json")
    parser.add_argument("--batch-rows", type=int, default=1024, help="Ray: rows per map_batches call (one block)")
    parser.add_argument("--window-rows", type=int, default=None,
                        help="Ray: rows per window, one Ray Dataset each (default: the executor's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.source, args.child_out, args.threads, args.shard_rows, args.backend, args.batch_rows,
              args.window_rows)
        return
    import shutil

    load_before = os.getloadavg()
    source = make_corpus(args.work, args.rows, args.shard_rows, args.words)
    n_shards = -(-args.rows // args.shard_rows)
    rows: list[dict[str, Any]] = []
    modes = [m for m in args.modes.split(",") if m]
    for mode in [m for m in modes if m != "resume"]:
        out = args.work / f"out-{source.name}-{mode}"  # per corpus: a resume compares with the same corpus's run
        shutil.rmtree(out, ignore_errors=True)
        rows.append(run_mode(mode, source, out, args))
        print(rows[-1], flush=True)
    rate = {r["mode"]: r["rows_per_s"] for r in rows}
    if "ray1" in rate and "ray2" in rate:
        rows.append({"mode": "ray-scaling", "efficiency_2_actors": round(rate["ray2"] / (2 * rate["ray1"]), 3),
                     "speedup_2_vs_1": round(rate["ray2"] / rate["ray1"], 3)})
        print(rows[-1], flush=True)
    if "resume" in modes:
        out = args.work / f"out-{source.name}-resume"
        shutil.rmtree(out, ignore_errors=True)
        kill = max(1, int(args.kill_at * n_shards))
        killed = run_mode("ray1", source, out, args, kill_after=kill)
        rerun = run_mode("ray1", source, out, args)
        row = {"mode": "resume", **killed, "rerun_seconds": rerun["seconds"], "rerun_rows_per_s": rerun["rows_per_s"],
               "rerun_peak_rss_driver_mib": rerun["peak_rss_driver_mib"],
               "rerun_peak_rss_other_mib": rerun["peak_rss_other_mib"],
               "rerun_shards_skipped": rerun["shards_skipped"], "rerun_shards_written": rerun["shards_written"],
               "restart_to_first_new_shard_s": rerun["first_new_shard_s"]}
        reference = args.work / f"out-{source.name}-local"
        if (reference / "shards").is_dir():
            row.update({f"vs_local_{k}": v for k, v in same_output(out, reference).items()})
        rows.append(row)
        print(row, flush=True)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_embed import cpu_info  # one CPU description for both benchmarks

    meta = {"benchmark": "bench_scale", **cpu_info(), "threads": args.threads, "rows": args.rows,
            "shard_rows": args.shard_rows, "words": args.words, "backend": args.backend,
            "batch_rows": args.batch_rows, "window_rows": args.window_rows,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()], "git": git_sha(),
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "versions": library_versions()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
