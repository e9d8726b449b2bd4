"""Triton kernels vs their torch sequences: time, achieved GB/s and TFLOP/s against the device's measured peaks.

    .venv/bin/python benchmarks/bench_kernels.py                  # CUDA: full sizes; CPU: correctness only
    .venv/bin/python benchmarks/bench_kernels.py --dtype bf16 --queries 1000 --corpus 65536 --k 100

On CUDA every kernel and its unfused torch sequence run in this process with ``triton.testing.do_bench``
(median ms) at realistic sizes (64k × 384 corpus, 1k queries, k = 100; 256 × 512-token batches for pooling);
GB/s and TFLOP/s are computed from the bytes each kernel must move and the FLOPs it must do (docs/kernels.md
works them out), against a measured copy bandwidth and a measured matmul peak. Each row also checks the
kernel's output against its reference. Without CUDA there is nothing to time: the script says so, runs every
kernel under Triton's interpreter at reduced sizes against its reference (correctness only), and still writes
the JSON rows. Prints a table; appends JSON rows (device, versions, git SHA, timestamp) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import embedforge.kernels as kernels
from embedforge import device as dev
from embedforge.kernels import reference
from embedforge.runner import git_sha, library_versions

REPO = Path(__file__).resolve().parents[1]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Case:
    """One kernel at one size: how to run it fused and as the torch sequence, and what it must move/compute."""

    name: str
    shape: str
    fused: Callable[[], Any]
    torch_seq: Callable[[], Any]
    check: Callable[[Any], tuple[bool, float]]  # fused output → (matches reference, max error / disagreement)
    bytes_moved: float  # compulsory bytes of the fused kernel
    flops: float  # useful FLOPs (integer ops for int8 / Hamming)


def unit_rows(n: int, d: int, dtype: torch.dtype, device: torch.device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1).to(device=device, dtype=dtype)


def topk_check(want: tuple[torch.Tensor, torch.Tensor], tol: float) -> Callable[[Any], tuple[bool, float]]:
    def check(got: tuple[torch.Tensor, torch.Tensor]) -> tuple[bool, float]:
        err = float((got[0].float() - want[0].float()).nan_to_num(posinf=0, neginf=0).abs().max())
        same_ids = float((got[1] == want[1]).float().mean())
        return err <= tol and same_ids >= 0.99, err

    return check


def exact_check(want: Any) -> Callable[[Any], tuple[bool, float]]:
    def check(got: Any) -> tuple[bool, float]:
        pairs = list(zip(got, want, strict=True)) if isinstance(got, tuple) else [(got, want)]
        diff = max(float((a.double() - b.double()).abs().max()) for a, b in pairs)
        return diff == 0.0, diff

    return check


def build_cases(args: argparse.Namespace, device: torch.device, backend: str) -> list[Case]:
    dtype = DTYPES[args.dtype]
    esize = torch.finfo(dtype).bits // 8
    q, n, d, k, cand = args.queries, args.corpus, args.dim, args.k, args.candidates
    queries, corpus = unit_rows(q, d, dtype, device, 0), unit_rows(n, d, dtype, device, 1)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    cases: list[Case] = []

    b, t, h, dim = args.batch, args.tokens, d, args.pool_dim
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(b, t, h, generator=gen).to(device=device, dtype=dtype)
    lengths = torch.randint(t // 4, t + 1, (b,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(device=device, dtype=torch.int64)
    live = float(lengths.sum())
    want_pool = reference.pool_normalize(hidden, mask, dim)
    cases.append(Case(
        "pool_normalize", f"B={b} T={t} H={h} dim={dim} {args.dtype}",
        lambda: kernels.pool_normalize(hidden, mask, dim, backend=backend),
        lambda: reference.pool_normalize(hidden, mask, dim),
        lambda got: (float((got - want_pool).abs().max()) <= 1e-5, float((got - want_pool).abs().max())),
        bytes_moved=live * dim * esize + b * t * 8 + b * dim * 4, flops=2.0 * live * dim))

    want_topk = reference.similarity_topk(queries, corpus, k)
    cases.append(Case(
        "similarity_topk", f"q={q} n={n} d={d} k={k} {args.dtype}",
        lambda: kernels.similarity_topk(queries, corpus, k, backend=backend),
        lambda: torch.topk(queries @ corpus.T, k, dim=1),
        topk_check(want_topk, tol),
        bytes_moved=(q + n) * d * esize + q * k * 12, flops=2.0 * q * n * d))

    codes, scales = reference.quantize_int8(corpus)
    cases.append(Case(
        "quantize_int8", f"n={n} d={d} {args.dtype}",
        lambda: kernels.quantize_int8(corpus, backend=backend),
        lambda: reference.quantize_int8(corpus),
        exact_check((codes, scales)),
        bytes_moved=n * d * (esize + 1) + n * 4, flops=3.0 * n * d))

    q_codes, q_scales = reference.quantize_int8(queries)
    want_int8 = reference.int8_topk(q_codes, q_scales, codes, scales, k)
    cases.append(Case(
        "int8_topk", f"q={q} n={n} d={d} k={k}",
        lambda: kernels.int8_topk(q_codes, q_scales, codes, scales, k, backend=backend),
        lambda: torch.topk(reference.int8_scores(q_codes, q_scales, codes, scales), k, dim=1),
        exact_check(want_int8),
        bytes_moved=(q + n) * (d + 4) + q * k * 12, flops=2.0 * q * n * d))

    bits = reference.pack_binary(corpus)
    cases.append(Case(
        "pack_binary", f"n={n} d={d} {args.dtype}",
        lambda: kernels.pack_binary(corpus, backend=backend),
        lambda: reference.pack_binary(corpus),
        exact_check(bits),
        bytes_moved=n * d * esize + n * d / 8, flops=2.0 * n * d))

    q_bits = reference.pack_binary(queries)
    want_ham = reference.hamming_topk(q_bits, bits, k)
    cases.append(Case(
        "hamming_topk", f"q={q} n={n} bits={d} k={k}",
        lambda: kernels.hamming_topk(q_bits, bits, k, backend=backend),
        lambda: reference.hamming_topk(q_bits, bits, k),
        exact_check(want_ham),
        bytes_moved=(q + n) * d / 8 + q * k * 12, flops=q * n * (d / 32) * 14))

    q32, c32 = queries.float(), corpus.float()
    candidates = want_ham[1][:, :cand] if cand <= k else reference.hamming_topk(q_bits, bits, cand)[1]
    want_rescore = reference.rescore(q32, c32, candidates, min(10, k))
    cases.append(Case(
        "rescore", f"q={q} candidates={candidates.shape[1]} d={d} k={min(10, k)}",
        lambda: kernels.rescore(q32, c32, candidates, min(10, k), backend=backend),
        lambda: reference.rescore(q32, c32, candidates, min(10, k)),
        topk_check(want_rescore, 1e-5),
        bytes_moved=q * candidates.shape[1] * (d * 4 + 8 + 4), flops=2.0 * q * candidates.shape[1] * d))
    return cases


def measured_peaks(device: torch.device) -> dict[str, float]:
    """Copy bandwidth (GB/s, read + write of 1 GiB) and dense matmul TFLOP/s (fp16 and fp32) on this GPU."""
    from triton.testing import do_bench

    src = torch.empty(1 << 28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    copy_ms = do_bench(lambda: dst.copy_(src))
    peaks = {"copy_gbps": 2 * src.numel() * 4 / copy_ms / 1e6}
    for name, dtype in (("fp16", torch.float16), ("fp32", torch.float32)):
        a = torch.randn(8192, 8192, device=device, dtype=dtype)
        ms = do_bench(lambda a=a: a @ a)
        peaks[f"matmul_{name}_tflops"] = 2 * 8192**3 / ms / 1e9
    return peaks


def run_cuda(cases: list[Case], device: torch.device, dtype_name: str) -> list[dict[str, Any]]:
    from triton.testing import do_bench

    peaks = measured_peaks(device)
    peak_flops = peaks["matmul_fp32_tflops" if dtype_name == "fp32" else "matmul_fp16_tflops"]
    rows = []
    for case in cases:
        ok, err = case.check(case.fused())
        fused_ms, torch_ms = do_bench(case.fused), do_bench(case.torch_seq)
        gbps, tflops = case.bytes_moved / fused_ms / 1e6, case.flops / fused_ms / 1e9
        rows.append({"kernel": case.name, "shape": case.shape, "correct": ok, "max_err": err,
                     "fused_ms": fused_ms, "torch_ms": torch_ms, "speedup": torch_ms / fused_ms,
                     "fused_gbps": gbps, "fused_tflops": tflops, "pct_peak_bw": 100 * gbps / peaks["copy_gbps"],
                     "pct_peak_flops": 100 * tflops / peak_flops, **peaks})
    return rows


def run_cpu(cases: list[Case]) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        start = time.perf_counter()
        ok, err = case.check(case.fused())
        rows.append({"kernel": case.name, "shape": case.shape, "correct": ok, "max_err": err,
                     "interpreter_s": time.perf_counter() - start})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="float inputs")
    parser.add_argument("--queries", type=int, default=None, help="default 1000 on CUDA, 64 on CPU")
    parser.add_argument("--corpus", type=int, default=None, help="default 65536 on CUDA, 2048 on CPU")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=100, help="rescored candidates per query")
    parser.add_argument("--batch", type=int, default=None, help="pooling batch; default 256 on CUDA, 8 on CPU")
    parser.add_argument("--tokens", type=int, default=None, help="pooling sequence length; 512 CUDA, 128 CPU")
    parser.add_argument("--pool-dim", type=int, default=256, help="Matryoshka dimension kept by pooling")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench" / "bench_kernels.json"))
    args = parser.parse_args()

    cuda = dev.cuda_available() and dev.has_module("triton")
    device = torch.device("cuda" if cuda else "cpu")
    full = {"queries": 1000, "corpus": 65536, "batch": 256, "tokens": 512}
    reduced = {"queries": 64, "corpus": 2048, "batch": 8, "tokens": 128}
    for key, value in (full if cuda else reduced).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if cuda:
        mode = "cuda"
        print(f"CUDA device: {torch.cuda.get_device_name(device)} — timing compiled kernels vs torch")
        rows = run_cuda(build_cases(args, device, "triton"), device, args.dtype)
    else:
        mode = "cpu-interpreter-correctness"
        print("No CUDA GPU here: nothing to time. Checking every kernel under Triton's interpreter against its "
              f"torch reference at reduced sizes (q={args.queries}, n={args.corpus}); the run times below are "
              "the interpreter's, not a speed figure.")
        rows = run_cpu(build_cases(args, device, "interpret"))

    meta = {"bench": "bench_kernels", "mode": mode, "device": str(device), "dtype": args.dtype,
            "gpu": torch.cuda.get_device_name(device) if cuda else None, "versions": library_versions(),
            "git_sha": git_sha(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    columns = (["kernel", "shape", "correct", "fused_ms", "torch_ms", "speedup", "fused_gbps", "pct_peak_bw",
                "fused_tflops", "pct_peak_flops"] if cuda else ["kernel", "shape", "correct", "max_err",
                                                                  "interpreter_s"])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({**meta, **row}) + "\n")
    print(f"appended {len(rows)} rows to {out}")
    if not all(row["correct"] for row in rows):
        raise SystemExit("some kernels disagree with their reference (see 'correct' above)")


if __name__ == "__main__":
    main()
