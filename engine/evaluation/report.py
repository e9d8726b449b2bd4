"""Writes an evaluation's outputs: ``results.json``, ``per_query.jsonl``, ``significance.json``, ``report.md``,
the PNG plots, and two formats other tools read:

- ``runs/<dataset>/<model>[-d<dim>].trec``: TREC run files (``qid Q0 docid rank score run``) of the float, BM25 and
  hybrid searches, for ``trec_eval``/``ranx`` (with the dataset's ``qrels/<split>.tsv``);
- ``mteb/<model>[__d<dim>][__best_passage]/no_revision_available/<Task>.json``: MTEB-style results
  (``scores.<split>[0]`` with ``ndcg_at_10``… and ``main_score``), the layout of MTEB's results folders; rows scored
  by best passage get their own folder, as MTEB scores one vector per document.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedforge.data.shards import atomic_write_json, atomic_write_text
from embedforge.evaluation import plots
from embedforge.evaluation.harness import EvalResult

RESULT_KEYS: tuple[str, ...] = (
    "dataset", "model", "dim", "quantization", "ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100",
    "p_at_1", "p_at_3", "map_at_100", "encode_ms_p50", "search_ms_p50", "search_ms_p99", "index_bytes")
"""Keys every row of ``results.json`` has (rows carry more: hit rates, HNSW, throughput, significance)."""

PLOTS = ("ndcg_vs_dim.png", "latency_vs_dim.png", "quality_vs_bytes.png")

MTEB_TASKS = {"scifact": "SciFact", "nfcorpus": "NFCorpus", "fiqa": "FiQA2018", "arguana": "ArguAna",
              "scidocs": "SCIDOCS", "trec-covid": "TRECCOVID", "cranfield": "Cranfield", "adi": "ADI"}
"""Dataset directory name → MTEB task name (others keep their name)."""
MTEB_METRICS = ("ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100", "map_at_100", "p_at_1", "p_at_3")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def _strictly_decreasing(scores: list[float], step: float = 1e-6) -> list[float]:
    """Scores as written to a TREC run: each lowered to at most the previous one minus ``step`` where it ties
    with (or, after rounding, exceeds) it. trec_eval ignores the rank column and sorts by score, breaking ties by
    document id, so tied scores (frequent in RRF: ranks (1, 2) and (2, 1) sum alike) would be re-ordered."""
    out: list[float] = []
    for score in scores:
        value = round(float(score), 6)
        out.append(value if not out or value < out[-1] else round(out[-1] - step, 6))
    return out


def write_trec_runs(result: EvalResult, out_dir: Path) -> list[Path]:
    """One TREC run file per ranked list of ``result.runs``; the run tag is the file's stem. Scores are made
    strictly decreasing within a query (:func:`_strictly_decreasing`), so trec_eval scores the order evaluate
    scored."""
    paths = []
    for key, run in sorted(result.runs.items()):
        dataset, model, *dim = key.split("/")
        tag = _safe(model + (f"-{dim[0]}" if dim else ""))
        lines = [f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n" for qid, hits in run.items()
                 for rank, (doc, score) in enumerate(
                     zip([d for d, _ in hits], _strictly_decreasing([s for _, s in hits]), strict=True), start=1)]
        path = out_dir / "runs" / _safe(dataset) / f"{tag}.trec"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(lines))
        paths.append(path)
    return paths


def write_mteb_results(result: EvalResult, out_dir: Path, split: str = "test") -> list[Path]:
    """MTEB-style result files of the float rows (one folder per model and dimension, one file per dataset)."""
    from embedforge import __version__

    full_dim: dict[str, int] = {}
    for row in result.rows:
        if row.get("dim") is not None and "fused_with" not in row:
            full_dim[row["model"]] = max(full_dim.get(row["model"], 0), int(row["dim"]))
    paths = []
    for row in result.rows:
        if row.get("quantization", "none") != "none" or "fused_with" in row:
            continue
        model = row["model"] if row.get("dim") in (None, full_dim.get(row["model"])) else f"{row['model']}__d{row['dim']}"
        if row.get("score_by") == "best_passage":  # not MTEB's protocol (one vector per document): kept apart
            model += "__best_passage"
        task = MTEB_TASKS.get(str(row["dataset"]).lower(), str(row["dataset"]))
        scores = {k: row[k] for k in MTEB_METRICS if row.get(k) is not None}
        doc = {"dataset_revision": None, "task_name": task, "mteb_version": None, "evaluated_by": f"embedforge {__version__}",
               "scores": {split: [{**scores, "main_score": row["ndcg_at_10"], "hf_subset": "default",
                                   "languages": ["eng-Latn"]}]},
               "evaluation_time": row.get("corpus_encode_s"), "kg_co2_emissions": None}
        path = out_dir / "mteb" / _safe(model) / "no_revision_available" / f"{task}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, doc)
        paths.append(path)
    return paths


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _bytes(n: Any) -> str:
    if not n:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def render_markdown(result: EvalResult, title: str, notes: Sequence[str] = ()) -> str:
    """The report: a quality table and a latency table per dataset, significance, plots."""
    rows = result.rows
    md = [f"# {title}", ""]
    md += [f"- {n}" for n in notes]
    md.append("")
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == ds]
        md += [f"## {ds} ({sub[0].get('n_docs')} docs, {sub[0].get('n_queries')} judged queries)", "", "### Quality", ""]
        md += _table(["model", "dim", "quant", "nDCG@10", "MRR@10", "R@10", "R@100", "P@1", "P@3", "MAP@100",
                      "Δ nDCG@10 vs ref", "p (t-test)", "p (randomization)"],
                     [[r["model"], _fmt(r["dim"]), r["quantization"], *(_fmt(r[k]) for k in RESULT_KEYS[4:11]),
                       _fmt(r.get("delta_ndcg_at_10")), _fmt(r.get("p_value_ttest")),
                       _fmt(r.get("p_value_randomization"))] for r in sub])
        md += ["", "### Latency and size (single query; ms)", ""]
        md += _table(["model", "dim", "quant", "encode p50", "encode p95", "encode b64 p50", "corpus docs/s",
                      "flat p50", "flat p99", "index", "HNSW p50", "HNSW p99", "HNSW R@10 vs exact", "HNSW index"],
                     [[r["model"], _fmt(r["dim"]), r["quantization"], _fmt(r.get("encode_ms_p50"), 2),
                       _fmt(r.get("encode_ms_p95"), 2), _fmt(r.get("encode_b64_ms_p50"), 1),
                       _fmt(r.get("corpus_docs_per_s"), 1), _fmt(r.get("search_ms_p50"), 3),
                       _fmt(r.get("search_ms_p99"), 3), _bytes(r.get("index_bytes")),
                       _fmt(r.get("hnsw_search_ms_p50"), 3), _fmt(r.get("hnsw_search_ms_p99"), 3),
                       _fmt(r.get("hnsw_recall_at_10"), 3), _bytes(r.get("hnsw_index_bytes"))] for r in sub])
        md.append("")
    if result.significance:
        md += ["## Significance (paired, per query nDCG@10)", ""]
        md += _table(["dataset", "model", "dim", "quant", "reference", "ref dim", "mean ref", "mean model", "Δ",
                      "p t-test", "p randomization", "queries"],
                     [[s["dataset"], s["model"], _fmt(s["dim"]), s["quantization"], s["reference"],
                       _fmt(s["reference_dim"]), _fmt(s["mean_reference"]), _fmt(s["mean_candidate"]),
                       _fmt(s["delta"]), _fmt(s["p_value_ttest"]), _fmt(s["p_value_randomization"]),
                       str(int(s["n_queries"]))] for s in result.significance])
        md.append("")
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [""]
    return "\n".join(md)


def write_report(result: EvalResult, out_dir: str | Path, title: str = "Evaluation",
                 notes: Sequence[str] = (), extra: dict[str, Any] | None = None, split: str = "test") -> dict[str, Path]:
    """Write every output file into ``out_dir``; returns their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for row in result.rows:
        missing = [k for k in RESULT_KEYS if k not in row]
        if missing:
            raise ValueError(f"result row {row.get('dataset')}/{row.get('model')} lacks keys {missing}")
    paths = {"results": out / "results.json", "per_query": out / "per_query.jsonl",
             "significance": out / "significance.json", "report": out / "report.md"}
    atomic_write_json(paths["results"], result.rows)
    atomic_write_text(paths["per_query"], "".join(json.dumps(r) + "\n" for r in result.per_query))
    atomic_write_json(paths["significance"], {"tests": result.significance, **(extra or {})})
    plots.quality_vs_dim(result.rows, out / PLOTS[0])
    plots.latency_vs_dim(result.rows, out / PLOTS[1])
    plots.quality_vs_bytes(result.rows, out / PLOTS[2])
    paths.update({p.removesuffix(".png"): out / p for p in PLOTS})
    atomic_write_text(paths["report"], render_markdown(result, title, notes))
    write_trec_runs(result, out)
    write_mteb_results(result, out, split)
    return paths


def headline(rows: Sequence[dict[str, Any]], reference: str = "base", candidate: str = "tuned") -> list[dict[str, Any]]:
    """Per dataset and dimension: ``candidate`` vs ``reference`` nDCG@10 of the float search, the difference, and
    whether the candidate is worse (for the end-of-run summary)."""
    by_key = {(r["dataset"], r["model"], r.get("dim")): r["ndcg_at_10"] for r in rows
              if r.get("quantization", "none") == "none" and "fused_with" not in r}
    out = []
    for (dataset, model, dim), value in sorted(by_key.items(), key=lambda kv: (kv[0][0], -(kv[0][2] or 0))):
        if model != candidate or (dataset, reference, dim) not in by_key:
            continue
        ref = by_key[(dataset, reference, dim)]
        out.append({"dataset": dataset, "dim": dim, reference: ref, candidate: value, "delta": value - ref,
                    "worse": value < ref})
    return out
