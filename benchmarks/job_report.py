"""Report of one finished job run: quality per model × dimension, significance, stage times, and the same job's
time on one H100 estimated from the measured work (tokens, FLOPs) of each stage.

    python benchmarks/job_report.py runs/scifact --md docs/results.md --img docs/img

Prints the tables, writes ``benchmarks/results/<job>_report.json``, and with ``--md`` a Markdown section whose
numbers all come from the run's ``results.json``, ``significance.json`` and stage manifests (the plot is copied
next to it). Nothing here is typed in by hand except the H100 assumptions, which are printed with the estimate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGE_ORDER = ["ingest", "analyze_vocab", "train_tokenizer", "extend_vocab", "chunk", "generate", "mine", "train",
               "evaluate", "embed"]
METRICS = [("ndcg_at_10", "nDCG@10"), ("mrr_at_10", "MRR@10"), ("recall_at_10", "R@10"),
           ("recall_at_100", "R@100"), ("p_at_1", "P@1")]

# --- H100 assumptions (stated with the estimate; change them here) -------------------------------------------
H100_BF16_FLOPS = 989e12
"""Dense bf16 tensor-core peak of an H100 SXM."""
ENCODER_MFU = 0.15
"""Model FLOPs utilisation assumed for a 22M-parameter encoder (small matmuls; far below large-model MFU)."""
LLM_OUTPUT_TOKENS_PER_S = 20_000.0
"""Assumed vLLM decode ceiling for a 135M model on one H100 (scheduler-bound, not FLOP-bound)."""
MINILM_PARAMS = 22.7e6
SMOLLM_PARAMS = 135e6
OTHER_SPEEDUP = 1.0
"""CPU-side stages (ingest, chunking, BM25, faiss on CPU) are assumed to take as long as here."""


def manifests(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Stage name → manifest of its newest finished directory in ``run_dir``."""
    found: dict[str, tuple[float, dict[str, Any]]] = {}
    for path in run_dir.glob("*/manifest.json"):
        if not (path.parent / "_SUCCESS").exists():
            continue
        m = json.loads(path.read_text())
        mtime = path.stat().st_mtime
        if m["stage"] not in found or mtime > found[m["stage"]][0]:
            found[m["stage"]] = (mtime, m | {"dir": str(path.parent)})
    return {s: found[s][1] for s in STAGE_ORDER if s in found}


def chunk_tokens(chunk_dir: str) -> int:
    import pyarrow.parquet as pq

    return sum(int(pq.read_table(p, columns=["n_tokens"]).column("n_tokens").to_numpy().sum())
               for p in sorted(Path(chunk_dir, "shards").glob("*.parquet")))


def encoder_flops(tokens: float, seq: int = 256, layers: int = 6, width: int = 384, train: bool = False) -> float:
    """2·N per token forward (6·N with backward) plus attention scores 4·layers·seq·width per token (×3 trained)."""
    per_token = 2 * MINILM_PARAMS + 4 * layers * seq * width
    return tokens * per_token * (3 if train else 1)


def h100_estimate(ms: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stage: CPU seconds here, the work it did, and an H100 time under the stated assumptions."""
    corpus_tokens = chunk_tokens(ms["chunk"]["dir"]) if "chunk" in ms else 0
    rows = []
    for stage, m in ms.items():
        cpu_s = float(m["timings"]["seconds"])
        thr = m.get("throughput") or {}
        work, h100 = "CPU-bound (same on a GPU node)", cpu_s * OTHER_SPEEDUP
        if stage == "generate":
            llm_s = float(thr.get("llm_seconds", 0.0))
            out_tok = float(thr.get("output_tokens_per_s", 0.0)) * llm_s
            in_tok = float(thr.get("input_tokens_per_s", 0.0)) * llm_s
            enc = encoder_flops(corpus_tokens)
            gen_h100 = max(out_tok / LLM_OUTPUT_TOKENS_PER_S,
                           2 * SMOLLM_PARAMS * (in_tok + out_tok) / (H100_BF16_FLOPS * ENCODER_MFU))
            h100 = gen_h100 + enc / (H100_BF16_FLOPS * ENCODER_MFU) + (cpu_s - llm_s) * 0.1
            llm = (f"LLM {in_tok / 1e6:.2f}M prompt + {out_tok / 1e6:.2f}M output tokens in {llm_s:.0f} s"
                   if llm_s else "no LLM queries")
            work = f"{llm}; round-trip encode {corpus_tokens / 1e6:.2f}M tokens"
        elif stage in ("mine", "embed"):
            flops = encoder_flops(corpus_tokens)
            h100 = flops / (H100_BF16_FLOPS * ENCODER_MFU) + 2.0
            work = f"encode {corpus_tokens / 1e6:.2f}M tokens ({flops / 1e12:.0f} TFLOP)"
        elif stage == "train":
            data = m.get("data", {})
            steps = (m.get("training") or {}).get("steps", 0)
            batch = m["config"].get("batch_size", 32)
            seq = m["config"].get("max_seq_length") or 256
            per_row = 32 + seq * (1 + data.get("negatives", 0))  # query + positive (+ negatives), padded
            flops = encoder_flops(steps * batch * per_row, seq=seq, train=True)
            val_s = sum(e.get("eval_runtime", 0.0) for e in (m.get("training") or {}).get("eval_history", []))
            h100 = flops / (H100_BF16_FLOPS * ENCODER_MFU) + val_s / 50 + 10
            work = f"{steps} steps × {batch} rows ≈ {flops / 1e15:.2f} PFLOP; validation {val_s:.0f} s"
        elif stage == "evaluate":
            n_models = len(m["config"].get("models", []))
            h100 = cpu_s / 20
            work = f"{n_models} models × corpus encode + search (assumed 20× faster, encode-dominated)"
        rows.append({"stage": stage, "cpu_seconds": round(cpu_s, 1), "rows_out": m.get("rows_out"),
                     "work": work, "h100_seconds": round(h100, 1)})
    return rows


def quality(ms: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Path | None]:
    if "evaluate" not in ms:
        return [], [], None
    out = Path(ms["evaluate"]["dir"])
    results = json.loads((out / "results.json").read_text())
    sig_path = out / "significance.json"
    tests = json.loads(sig_path.read_text())["tests"] if sig_path.exists() else []
    plot = out / "ndcg_vs_dim.png"
    return results, tests, plot if plot.exists() else None


def md_tables(job: str, results: list[dict[str, Any]], tests: list[dict[str, Any]], times: list[dict[str, Any]],
              plot_rel: str | None) -> str:
    lines = []
    for dataset in sorted({r["dataset"] for r in results}):
        rows = [r for r in results if r["dataset"] == dataset and r.get("quantization", "none") == "none"]
        if not rows:
            continue
        n_q = rows[0].get("n_queries")
        what = "held-out synthetic queries" if dataset == "heldout" else "judged test queries"
        lines += [f"**{dataset}** ({n_q} {what}, {rows[0].get('n_docs')} documents), from "
                  f"`results.json` of the `{job}` run:", "",
                  "| model | dim | " + " | ".join(label for _, label in METRICS) + " | Δ nDCG vs base | p |",
                  "|---|---:|" + "---:|" * len(METRICS) + "---:|---:|"]
        for r in sorted(rows, key=lambda r: (r["model"] != "bm25", r["model"], -int(r.get("dim") or 0))):
            t = next((t for t in tests if t["dataset"] == dataset and t["model"] == r["model"]
                      and t["dim"] == r.get("dim") and t["quantization"] == "none"
                      and t["metric"] == "ndcg_at_10"), None)
            delta = f"{t['delta']:+.4f}" if t else ""
            p = f"{t['p_value_randomization']:.2g}" if t else ""
            dim = r.get("dim") or "—"
            lines.append(f"| {r['model']} | {dim} | " + " | ".join(f"{r[k]:.4f}" if r.get(k) is not None else "—"
                                                                   for k, _ in METRICS) + f" | {delta} | {p} |")
        lines.append("")
    if plot_rel:
        lines += [f"![nDCG@10 per dimension]({plot_rel})", ""]
    total_cpu = sum(t["cpu_seconds"] for t in times)
    total_h100 = sum(t["h100_seconds"] for t in times)
    lines += ["Stage times of the same run (2 CPU cores) and the estimate for one H100 (see below):", "",
              "| stage | rows out | seconds here | work | H100 estimate (s) |", "|---|---:|---:|---|---:|"]
    lines += [f"| {t['stage']} | {t['rows_out'] if t['rows_out'] is not None else ''} | {t['cpu_seconds']:.0f} | "
              f"{t['work']} | {t['h100_seconds']:.0f} |" for t in times]
    lines += [f"| **total** | | **{total_cpu:.0f}** ({total_cpu / 60:.1f} min) | | **{total_h100:.0f}** |", "",
              f"H100 estimate, worked out from the work each stage did here: encoder FLOPs (2·N per token forward, "
              f"6·N trained, plus attention) at {ENCODER_MFU:.0%} of the {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16 "
              f"peak (a 22M-parameter model cannot fill an H100); SmolLM2 decoding at an assumed vLLM ceiling of "
              f"{LLM_OUTPUT_TOKENS_PER_S:,.0f} output tokens/s (a 135M model is scheduler-bound, not FLOP-bound); "
              f"the non-LLM rest of generate (candidate-query encoding, filters, engine start-up) 10× faster; "
              f"evaluate 20× faster; ingest, analyze_vocab and chunk unchanged (CPU work on a GPU node too). "
              f"These are estimates, not measurements: the run had no GPU.", ""]
    return "\n".join(lines)


def write_between_markers(md: Path, job: str, text: str) -> None:
    """Replace what lies between ``<!-- job_report:JOB -->`` and ``<!-- /job_report -->`` in ``md`` (or write the
    whole file when it has no such markers), so hand-written prose around the generated tables survives."""
    start, end = f"<!-- job_report:{job} -->", "<!-- /job_report -->"
    old = md.read_text() if md.exists() else ""
    if start in old and end in old.split(start, 1)[1]:
        head, rest = old.split(start, 1)
        md.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])
    else:
        md.write_text(text + "\n")


def machine(ms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the stages ran on, from their manifests (each records its machine and its load average when it
    finished); a run whose manifests predate that field gets this machine's CPU model, marked as such."""
    seen = {name: m["machine"] for name, m in ms.items() if m.get("machine")}
    if not seen:
        from embedforge.device import cpu_model

        return {"cpu_model": cpu_model(), "note": "the report's machine: the run's manifests do not record theirs"}
    first = next(iter(seen.values()))
    return {"cpu_model": sorted({m["cpu_model"] for m in seen.values()}), "cpu_cores": first.get("cpu_cores"),
            "cpu_native_bf16": first.get("cpu_native_bf16"), "gpu": first.get("gpu"),
            "load_average_at_stage_end": {name: m.get("load_average") for name, m in seen.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="the job's run directory, e.g. runs/scifact")
    ap.add_argument("--md", type=Path, help="write the Markdown tables here")
    ap.add_argument("--img", type=Path, help="copy the nDCG-per-dimension plot into this directory")
    ap.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/<job>_report.json)")
    args = ap.parse_args()
    ms = manifests(args.run_dir)
    if not ms:
        print(f"{args.run_dir}: no finished stage (no */manifest.json with _SUCCESS)", file=sys.stderr)
        return 2
    job = next(iter(ms.values()))["job"]
    results, tests, plot = quality(ms)
    times = h100_estimate(ms)
    plot_rel = None
    if plot and args.img and args.md:
        args.img.mkdir(parents=True, exist_ok=True)
        target = args.img / f"{job}_ndcg_vs_dim.png"
        shutil.copyfile(plot, target)
        plot_rel = str(target.relative_to(args.md.parent)) if target.is_relative_to(args.md.parent) else str(target)
    text = md_tables(job, results, tests, times, plot_rel)
    print(text)
    assumptions = {"h100_bf16_flops": H100_BF16_FLOPS, "encoder_mfu": ENCODER_MFU,
                   "llm_output_tokens_per_s": LLM_OUTPUT_TOKENS_PER_S}
    out = args.out or ROOT / "benchmarks" / "results" / f"{job}_report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"job": job, "run_dir": str(args.run_dir), "machine": machine(ms), "stages": times,
                               "total_seconds": sum(t["cpu_seconds"] for t in times),
                               "h100_total_seconds": sum(t["h100_seconds"] for t in times),
                               "h100_assumptions": assumptions,
                               "quality": [r for r in results if r.get("quantization", "none") == "none"],
                               "significance": [t for t in tests if t["metric"] == "ndcg_at_10"]}, indent=1))
    if args.md:
        write_between_markers(args.md, job, text)
    print(f"wrote {out}" + (f" and {args.md}" if args.md else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
