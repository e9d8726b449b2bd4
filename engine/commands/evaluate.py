"""Commands ``evaluate`` (models × BEIR datasets × dimensions), ``bench`` (a suite YAML) and ``drift``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from embedforge.commands import fail
from embedforge.configs.evaluate import EvaluateConfig


def _summary(rows: list[dict]) -> None:
    from rich.table import Table

    from embedforge.progress import console

    table = Table("dataset", "model", "dim", "quant", "nDCG@10", "R@100", "search p50 ms", "index bytes")
    for r in rows:
        table.add_row(r["dataset"], r["model"], str(r["dim"] or "–"), r["quantization"], f"{r['ndcg_at_10']:.4f}",
                      f"{r['recall_at_100']:.4f}",
                      f"{r['search_ms_p50']:.3f}" if r.get("search_ms_p50") is not None else "–",
                      f"{r['index_bytes']:,}" if r.get("index_bytes") else "–")
    console.print(table)


def _parse_dims(dims: str | None) -> list[int]:
    if not dims:
        return []
    try:
        values = [int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        fail(f"--dims: expected comma-separated integers like 384,192,96,48, got '{dims}'")
    if any(d <= 0 for d in values):
        fail(f"--dims: dimensions must be positive, got '{dims}'")
    return sorted(set(values), reverse=True)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _weights(text: str) -> list[float]:
    try:
        return [float(t) for t in _names(text)]
    except ValueError:
        fail(f"--bm25-weights: expected comma-separated numbers like 0.5,1, got '{text}'")


def _config(**fields: object) -> EvaluateConfig:
    """The ``evaluate`` stage's config from command-line options; a bad value exits 2 naming the option."""
    from pydantic import ValidationError

    try:
        return EvaluateConfig(**fields)
    except ValidationError as err:
        fail("; ".join(f"{_option(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()))


def _option(loc: tuple) -> str:
    """The command-line option of an error's config field (the options involved, for a cross-field error)."""
    if not loc:
        return "options"
    return _OPTION.get(str(loc[0]), "--" + str(loc[0]).replace("_", "-"))


_OPTION = {"models": "--model", "datasets": "--dataset", "quantizations": "--quant"}
"""Command-line option of a config field whose name differs."""


def _submit_bench(suite: Path, out: Path, device: str, dtype: str, address: str, follow: bool) -> None:
    """``bench --submit``: the same command as a Ray job; results land in ``out`` (shared storage) as locally."""

    from embedforge.cluster import ray_jobs
    from embedforge.commands.submit import submit_to_ray
    from embedforge.evaluation.suite import SuiteError, load_suite

    try:
        load_suite(suite)  # fail here, not on the cluster
        if not out.is_absolute():
            raise ray_jobs.ClusterError(f"--out {out} is relative; with --submit it must be an absolute path on "
                                        "storage every node sees")
        rel = suite.resolve().relative_to(Path.cwd().resolve())
        request = ray_jobs.command_submission(["bench", str(rel), "--out", str(out), "--device", device,
                                               "--dtype", dtype], working_dir=Path.cwd(),
                                              metadata={"embedforge_job": f"bench:{rel}"})
        submit_to_ray(address, request, follow, f"; results in {out}")
    except (SuiteError, ray_jobs.ClusterError) as exc:
        fail(str(exc))
    except ValueError:
        fail(f"suite {suite} must be inside the working directory {Path.cwd()} (it is uploaded with it)")


def evaluate(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Model: packaged name, directory, label=dir, or bm25 (repeat)")],
    dataset: Annotated[list[str], typer.Option("--dataset", help="BEIR directory or builtin:<name> (repeat)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory")],
    dims: Annotated[str | None, typer.Option("--dims", "-d", help="Matryoshka dimensions, e.g. 384,192,96,48 (default: full)")] = None,
    quant: Annotated[str, typer.Option(help="Quantizations: none,int8,binary,binary_rescore")] = "none,int8,binary",
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    latency: Annotated[bool, typer.Option(help="Measure encode/search latency")] = True,
    latency_queries: Annotated[int, typer.Option(help="Queries timed for encode latency")] = 64,
    search_latency_queries: Annotated[int, typer.Option(help="Queries timed for search latency")] = 100,
    reference: Annotated[str | None, typer.Option(help="Label of the reference model (default: first)")] = None,
    hybrid: Annotated[str, typer.Option(help="Also fuse each dense model with BM25: rrf,zscore (default: none)")] = "",
    bm25_weights: Annotated[str, typer.Option(help="--hybrid: BM25's weight(s) against the dense model's 1, e.g. 0.5,1")] = "1",
    bm25_stemmer: Annotated[str, typer.Option(
        help="BM25's Snowball stemmer: english, german, ... or none")] = "english",
    score_by: Annotated[str, typer.Option(
        help="document (one vector per document) or best_passage (split long documents, score by the best part)")] = "document",
    passage_tokens: Annotated[int | None, typer.Option(help="best_passage: tokens per passage (default: the model's limit)")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse vectors from the embedding cache ($EMBEDFORGE_CACHE)")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help="fp32, bf16 or fp16")] = "fp32",
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Evaluate models (and bm25) on BEIR datasets per dimension and quantization: results.json, report.md, plots.

    Finished (dataset, model) results are kept in OUT/partial, so an interrupted run resumes."""
    from embedforge.data.beir import BeirFormatError, load_beir
    from embedforge.data.ingest import resolve_path
    from embedforge.evaluation.harness import evaluate_models, parse_model_ref
    from embedforge.evaluation.report import write_report
    from embedforge.progress import console, setup_logging

    setup_logging(log_level)
    for d in dataset:
        if not resolve_path(d).is_dir():
            fail(f"--dataset {d}: not a directory (BEIR layout: corpus.jsonl, queries.jsonl, qrels/{split}.tsv)")
    if passage_tokens is not None and score_by != "best_passage":
        fail(f"--passage-tokens {passage_tokens}: applies only with --score-by best_passage (got {score_by})")
    cfg = _config(models=model, datasets=dataset, split=split, dims=_parse_dims(dims), quantizations=_names(quant),
                  latency=latency, latency_queries=latency_queries, search_latency_queries=search_latency_queries,
                  reference=reference, hybrid=_names(hybrid), bm25_weights=_weights(bm25_weights),
                  bm25_stemmer=None if bm25_stemmer.lower() in ("none", "null", "") else bm25_stemmer, score_by=score_by,
                  passage_tokens=passage_tokens, cache=cache, dtype=dtype, bm25=False, heldout=False)
    models = [parse_model_ref(m) for m in cfg.models]
    try:
        result = evaluate_models([lambda d=d: load_beir(d, split) for d in dataset], models, cfg, device=device,
                                 cache_dir=out / "partial")
    except (BeirFormatError, FileNotFoundError, ValueError) as exc:
        fail(str(exc), 1)
    paths = write_report(result, out, title="Evaluation", notes=[f"models: {', '.join(f'{m.label} = {m.ref}' for m in models)}",
                                                                 "latency measured on a shared CPU"])
    _summary(result.rows)
    console.print(f"wrote {paths['results']}, {paths['report']} and plots")

def bench(
    suite: Annotated[Path, typer.Argument(help="Suite YAML (datasets × models × dims)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help="fp32, bf16 or fp16")] = "fp32",
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
    submit: Annotated[str | None, typer.Option(
        "--submit", help="Run the suite as a job on this Ray cluster (dashboard address) instead of here")] = None,
    follow: Annotated[bool, typer.Option(help="With --submit: stream the job's logs until it ends")] = True,
) -> None:
    """Run a benchmark suite; exit 1 when a reference figure in the suite's `expect` list is missed."""
    if submit:
        _submit_bench(suite, out, device, dtype, submit, follow)
        return
    from embedforge.data.beir import BeirFormatError, load_beir
    from embedforge.data.shards import atomic_write_json
    from embedforge.evaluation.harness import evaluate_models, parse_model_ref
    from embedforge.evaluation.report import write_report
    from embedforge.evaluation.suite import SuiteError, check_expectations, load_suite
    from embedforge.progress import console, setup_logging

    setup_logging(log_level)
    try:
        spec = load_suite(suite)
    except SuiteError as exc:
        fail(str(exc))
    models = [parse_model_ref(m) for m in spec.models]
    try:
        result = evaluate_models([lambda d=d: load_beir(d.path, d.split) for d in spec.datasets], models,
                                 spec.config(dtype), device=device, cache_dir=out / "partial")
    except (BeirFormatError, FileNotFoundError, ValueError) as exc:
        fail(str(exc), 1)
    checks = check_expectations(result.rows, spec.expect)
    notes = [f"suite {suite}", "latency measured on a shared CPU"]
    notes += [f"expected {c['dataset']}/{c['model']}/{c['dim']} {c['metric']} = {c['value']} ± {c['tolerance']}: "
              f"measured {c['measured'] if c['measured'] is None else round(c['measured'], 4)} → "
              f"{'ok' if c['ok'] else 'missed (informative)' if c['informative'] else 'MISSED'}" for c in checks]
    write_report(result, out, title=f"Benchmark suite {spec.name}", notes=notes, extra={"expectations": checks})
    atomic_write_json(out / "expectations.json", checks)
    _summary(result.rows)
    missed = [c for c in checks if not c["ok"] and not c["informative"]]
    for line in notes[2:]:
        console.print(line, highlight=False)
    if missed:
        fail(f"{len(missed)} reference figure(s) missed (see {out / 'expectations.json'})", 1)

def drift(
    reference: Annotated[Path, typer.Option("--reference", help="Embedding shards dir or .npy")],
    current: Annotated[Path, typer.Option("--current", help="Embedding shards dir or .npy")],
    min_centroid_cosine: Annotated[float, typer.Option(help="Drift when the centroid cosine is below")] = 0.95,
    max_mmd: Annotated[float, typer.Option(help="Drift when the RBF MMD² is above")] = 0.05,
    label_column: Annotated[str | None, typer.Option(help="Column with document labels: add clustering coherence")] = None,
    sample: Annotated[int, typer.Option(help="Vectors sampled per set for MMD/KS")] = 1000,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics as JSON here")] = None,
) -> None:
    """Compare two embedding sets; exit 1 when drift passes a threshold, 0 otherwise."""
    from embedforge.data.shards import atomic_write_json
    from embedforge.evaluation.clustering import coherence
    from embedforge.evaluation.drift import drift_metrics, drift_verdict, load_embeddings

    try:
        ref_vecs, ref_labels = load_embeddings(reference, label_column)
        cur_vecs, cur_labels = load_embeddings(current, label_column)
        metrics: dict = drift_metrics(ref_vecs, cur_vecs, sample=sample)
        if label_column:
            metrics["coherence_reference"] = coherence(ref_vecs, ref_labels or [])
            metrics["coherence_current"] = coherence(cur_vecs, cur_labels or [])
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    reasons = drift_verdict(metrics, min_centroid_cosine, max_mmd)
    report = {"reference": str(reference), "current": str(current), **metrics, "drift": bool(reasons),
              "reasons": reasons, "thresholds": {"min_centroid_cosine": min_centroid_cosine, "max_mmd": max_mmd}}
    if out:
        atomic_write_json(out, report)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    if reasons:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("bench")(bench)
    app.command("drift")(drift)
