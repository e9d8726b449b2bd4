"""How fast is the input content hash? MB/s of XXH3-128 (what embedforge uses) vs BLAKE3 and SHA-256 on a
generated file of at least 1 GB, both from the page cache (warm) and as the fingerprint function sees it.

    .venv/bin/python benchmarks/bench_hash.py                 # 1 GiB file in a temp dir, 3 passes per hash
    .venv/bin/python benchmarks/bench_hash.py --gib 2 --passes 2

Every input byte of ingest sources and evaluate datasets is hashed to name the stages' outputs
(``embedforge/data/fingerprint.py``), so this is the cost a job pays per GB of corpus on ``validate``/``run``.
Prints a table and writes ``benchmarks/results/bench_hash.json`` (CPU model, load average, git SHA, versions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import xxhash

from embedforge.data import fingerprint
from embedforge.runner import git_sha, library_versions

REPO = Path(__file__).resolve().parents[1]
BLOCK = 8 << 20


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_file(path: Path, size: int) -> None:
    """``size`` bytes of JSONL-like text (incompressible enough: varied digits), written in 8 MiB blocks."""
    block = "".join(f'{{"_id": "{i}", "text": "document {i * 2654435761 % 1000003} text"}}\n' for i in range(120_000))
    data = block.encode()[:BLOCK]
    with open(path, "wb") as fh:
        written = 0
        while written < size:
            chunk = data[: min(BLOCK, size - written)]
            fh.write(chunk)
            written += len(chunk)


def stream(path: Path, make: Callable[[], object]) -> str:
    digest = make()
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])  # type: ignore[attr-defined]
    return digest.hexdigest()  # type: ignore[attr-defined]


def contenders() -> dict[str, Callable[[Path], str]]:
    out: dict[str, Callable[[Path], str]] = {
        "xxh3_128 (embedforge)": lambda p: stream(p, xxhash.xxh3_128),
        "sha256": lambda p: stream(p, hashlib.sha256),
        "blake2b": lambda p: stream(p, hashlib.blake2b),
    }
    try:
        import blake3

        out["blake3 (1 thread)"] = lambda p: stream(p, blake3.blake3)
        out["blake3 (all threads)"] = lambda p: stream(p, lambda: blake3.blake3(max_threads=blake3.blake3.AUTO))
    except ImportError:
        pass

    def fingerprint_fn(p: Path) -> str:
        fingerprint._memo.clear()  # measure the hashing, not the in-process memo
        return fingerprint.file_fingerprint(p)

    out["file_fingerprint()"] = fingerprint_fn
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="File size in GiB (at least 1 GB)")
    parser.add_argument("--passes", type=int, default=3, help="Timed passes per hash (best is reported)")
    parser.add_argument("--dir", default=None, help="Where to write the file (default: a temp dir)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_hash.json"))
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    if size < 10**9:
        parser.error("--gib must give at least 1 GB (1e9 bytes)")
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "corpus.jsonl"
        t0 = time.perf_counter()
        make_file(path, size)
        write_s = time.perf_counter() - t0
        stream(path, xxhash.xxh3_64)  # warm the page cache once
        for name, fn in contenders().items():
            times = []
            for _ in range(args.passes):
                t0 = time.perf_counter()
                fn(path)
                times.append(time.perf_counter() - t0)
            best = min(times)
            rows.append({"hash": name, "best_s": round(best, 3), "mb_per_s": round(size / best / 1e6, 1),
                         "all_s": [round(t, 3) for t in times]})
    print(f"{size / 1e9:.2f} GB file (written in {write_s:.1f} s), best of {args.passes}, warm page cache")
    print(f"{'hash':<24} {'best s':>8} {'MB/s':>9}")
    for r in rows:
        print(f"{r['hash']:<24} {r['best_s']:>8.3f} {r['mb_per_s']:>9.1f}")
    result = {"benchmark": "bench_hash", "bytes": size, "passes": args.passes, "rows": rows,
              "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "load_avg_before": load_before,
              "load_avg_after": os.getloadavg(), "git": git_sha(), "versions": {**library_versions(),
              "xxhash": xxhash.VERSION}, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
