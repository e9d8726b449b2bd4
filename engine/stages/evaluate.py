"""Stage ``evaluate``: base vs this job's trained model vs BM25, on BEIR datasets and the held-out split.

Writes ``results.json`` (one row per dataset × model × dimension × quantization), ``per_query.jsonl``,
``significance.json`` (paired tests against the first model, normally ``base``), ``report.md`` and PNG plots
into the stage directory. Finished (dataset, model) results are cached under ``partial/``, so a killed stage
resumes where it stopped.
"""

from __future__ import annotations

from embedforge.configs.evaluate import EvaluateConfig
from embedforge.data.beir import load_beir
from embedforge.data.ingest import resolve_path
from embedforge.evaluation.harness import BM25, ModelRef, evaluate_models, parse_model_ref
from embedforge.evaluation.heldout import heldout_dataset
from embedforge.evaluation.report import write_report
from embedforge.stages.base import StageContext, StageFailed


def _models(ctx: StageContext, cfg: EvaluateConfig) -> list[ModelRef]:
    models: list[ModelRef] = []
    for ref in cfg.models:
        if ref == "train":
            if not ctx.has_input("train"):
                ctx.extra.setdefault("skipped_models", []).append("train (the job has no train stage)")
                continue
            models.append(ModelRef("tuned", ctx.resolve_model("train")))
        elif ref == "base":
            models.append(ModelRef("base", ctx.resolve_model("base")))
        else:
            parsed = parse_model_ref(ref)
            models.append(parsed if parsed.is_bm25 else ModelRef(parsed.label, ctx.resolve_model(parsed.ref)))
    if cfg.bm25 and not any(m.is_bm25 for m in models):
        models.append(ModelRef(BM25, BM25))
    return models


def _datasets(ctx: StageContext, cfg: EvaluateConfig) -> list:
    loaders: list = []
    for path in cfg.datasets:
        if not resolve_path(path).is_dir():
            raise StageFailed(f"evaluate: dataset '{path}' is not a directory (BEIR layout expected)")
        loaders.append(lambda p=path: load_beir(p, cfg.split))
    if cfg.heldout and ctx.has_input("chunk") and ctx.has_input("generate"):
        dataset, counts = heldout_dataset(ctx.input_dir("chunk"), ctx.input_dir("generate"))
        for key, n in counts.items():
            ctx.count(key, n)
        if dataset.query_ids:
            loaders.append(dataset)
        else:
            ctx.extra["heldout_note"] = "the generate stage produced no usable val queries"
    if not loaders:
        raise StageFailed("evaluate: nothing to evaluate — list BEIR directories under `datasets`, or run the "
                          "chunk and generate stages for the held-out split")
    return loaders


def run(ctx: StageContext) -> None:
    cfg: EvaluateConfig = ctx.config
    models = _models(ctx, cfg)
    datasets = _datasets(ctx, cfg)
    try:
        result = evaluate_models(datasets, models, cfg, seed=ctx.job.seed, device=ctx.job.device,
                                 cache_dir=ctx.out_dir / "partial")
    except ValueError as exc:
        raise StageFailed(f"evaluate: {exc}") from exc
    notes = [f"models: {', '.join(f'{m.label} = {m.ref}' for m in models)}",
             "quality: exact search (fp32) or the quantized index; latency: single-query calls, shared CPU"]
    write_report(result, ctx.out_dir, title=f"Evaluation — job {ctx.job.name}", notes=notes)
    ctx.count("result_rows", len(result.rows))
    ctx.extra["primary_metric"] = "ndcg_at_10"
    ctx.extra["ndcg_at_10"] = {f"{r['dataset']}/{r['model']}/{r['dim']}/{r['quantization']}": round(r["ndcg_at_10"], 4)
                               for r in result.rows}
    ctx.extra["significance"] = [{k: s[k] for k in ("dataset", "model", "reference", "dim", "quantization", "delta",
                                                    "p_value_ttest", "p_value_randomization")}
                                 for s in result.significance]
