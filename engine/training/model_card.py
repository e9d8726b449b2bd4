"""embedforge's sections of a trained model's card (README.md): validation per dimension, lineage, training
arguments. The card's metadata and usage come from sentence-transformers (:mod:`embedforge.training.model_files`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def kept_base(guard: dict[str, Any] | None) -> bool:
    """True when the regression guard published the base (start) model's weights instead of the tuned ones."""
    return bool(guard) and guard["promoted"] == "base"


def _metrics_table(before: dict[str, float], after: dict[str, float], dims: list[int],
                   base_kept: bool = False, prefix: str = "val") -> list[str]:
    b, a = ("base (these weights)", "tuned (not kept)") if base_kept else ("before", "after")
    lines = [f"| dim | nDCG@10 {b} | nDCG@10 {a} | MRR@10 {b} | MRR@10 {a} | recall@10 {b} | recall@10 {a} |",
             "|---|---|---|---|---|---|---|"]
    for d in dims:
        cells = [side.get(f"{prefix}_{m}_d{d}") for m in ("ndcg@10", "mrr@10", "recall@10") for side in (before, after)]
        lines.append(f"| {d} | " + " | ".join("–" if c is None else f"{c:.4f}" for c in cells) + " |")
    return lines


def _guard_section(guard: dict[str, Any] | None) -> list[str]:
    """The regression guard's verdict: which model this directory holds and why."""
    if not guard:
        return []
    lines = ["## Regression guard", "", f"{guard['message'][0].upper()}{guard['message'][1:]}."]
    if kept_base(guard):
        lines += ["", "**Not promoted**: this directory holds the start model unchanged, because the tuned model "
                  f"did not beat it on {guard['signal']} validation at {guard['primary_dim']} d "
                  f"(`promote: {guard['promote']}`)."]
    return [*lines, ""]


def _judged_section(data: dict[str, Any], before: dict[str, float], after: dict[str, float], dims: list[int],
                    base_kept: bool) -> list[str]:
    """Validation on real judged queries (``train.judged_queries``), when the run had them."""
    if not data.get("judged_queries"):
        return []
    return ["## Validation (judged queries)", "",
            f"{data['judged_queries']} queries of `{Path(str(data.get('judged_from'))).name}` "
            f"(`qrels/{data.get('judged_split')}.tsv`) searched in the same passages; a document ranks at its best "
            "passage.", "", *_metrics_table(before, after, dims, base_kept, prefix="val_judged"), ""]


def model_card(*, job: str, stage_hash: str, spec_hash: str, start_model: str, start_model_id: str,
               start_model_ref: str | None = None,
               mode: str, loss: str, inputs: dict[str, Any], data: dict[str, Any], config: dict[str, Any],
               dims: list[int], before: dict[str, float], after: dict[str, float], history: dict[str, Any],
               versions: dict[str, str], guard: dict[str, Any] | None = None) -> str:
    """embedforge's part of the model card (after sentence-transformers' own, :mod:`model_files`): validation per
    dimension, the regression guard, lineage (names and content hashes, no machine paths), training settings.

    When the guard kept the base model (``guard["promoted"] == "base"``), the card says first, in plain words, that
    the weights are the start model's, unchanged; the lineage names that model as the source of the weights."""
    start = start_model_ref or Path(start_model).name
    training = (f"(stage `train`, mode `{mode}`, loss `{loss}`"
                + (f" in MatryoshkaLoss at dims {dims}" if dims else "") + ")")
    if kept_base(guard):
        opening = [f"**The weights in this directory are the base model's, unchanged: `{start}` (model id "
                   f"`{start_model_id}`).** embedforge trained a candidate {training}, but the regression guard "
                   "kept the base model because the candidate did not beat it (see *Regression guard* below); "
                   "no fine-tuning is in these weights."]
        source = "- weights: the start model's, unchanged (the tuned candidate was not promoted)"
    else:
        opening = [f"Fine-tuned by embedforge {training}."]
        source = f"- weights: the `{guard['candidate']}` candidate, trained from the start model" if guard else ""
    lines = [
        "## embedforge",
        "",
        *opening,
        "Load it with `SentenceTransformer(path)`; truncate vectors to any of the Matryoshka dimensions and "
        "re-normalize.",
        "",
        "## Validation (held-out synthetic queries)",
        "",
        f"{data.get('val_queries', 0)} queries searched in {data.get('val_corpus', 0)} passages; the relevant "
        "passage of a query is the chunk it was generated from.",
        "",
        *_metrics_table(before, after, dims, kept_base(guard)),
        "",
        *_judged_section(data, before, after, dims, kept_base(guard)),
        *_guard_section(guard),
        "## Lineage",
        "",
        f"- job: `{job}`, job spec hash `{spec_hash}`, stage hash `{stage_hash}`",
        f"- start model: `{start}` (model id `{start_model_id}`)",
        *([source] if source else []),
        f"- training rows: {data.get('train_rows', 0)} from `{data.get('source')}`"
        f" ({data.get('negatives', 0)} hard negatives per row), quarantined {data.get('quarantined', 0)}",
    ]
    for name, info in inputs.items():
        lines.append(f"- input `{name}`: hash `{info['hash']}`, {len(info.get('shards', []))} shards "
                     f"({', '.join(Path(s).name for s in info.get('shards', [])[:5])}"
                     + (", …" if len(info.get("shards", [])) > 5 else "") + ")")
    lines += ["", "## Training", "", f"- steps: {history.get('steps')}, best step/epoch: {history.get('best')}",
              f"- seconds: {history.get('seconds')}", "", "```json", json.dumps(config, indent=2, default=str), "```",
              "", "## Versions", "", "```json", json.dumps(versions, indent=2), "```", ""]
    return "\n".join(lines)
