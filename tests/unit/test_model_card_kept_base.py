"""The model card when the regression guard keeps the base model: it says plainly, first, that the weights are the
base model's, unchanged; the lineage names that model as their source; sentence-transformers' part keeps
``base_model`` in the metadata but does not claim the weights were fine-tuned from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from embedforge.training.guard import Candidate, choose
from embedforge.training.model_card import kept_base, model_card
from embedforge.training.model_files import write_model_card

BASE = {"val_ndcg@10_d384": 0.62, "val_recall@10_d384": 0.9, "val_ndcg@10_d96": 0.58, "val_recall@10_d96": 0.85}
TUNED = {"val_ndcg@10_d384": 0.41, "val_recall@10_d384": 0.7, "val_ndcg@10_d96": 0.39, "val_recall@10_d96": 0.66}


def guard(tuned: dict[str, float], promote: str = "if_better") -> dict:
    """The guard as finish() builds it (choose → as_manifest)."""
    verdict = choose([Candidate("base", BASE), Candidate("tuned", tuned)], key=lambda d: f"val_ndcg@10_d{d}",
                     dims=[384, 96], primary_dim=384, promote=promote, signal="synthetic-query nDCG@10")
    return verdict.as_manifest("synthetic", 384, promote)


def card(g: dict) -> str:
    """model_card() with the inputs finish() passes (absolute shard paths, the job's base model name)."""
    return model_card(job="adi", stage_hash="0123456789ab", spec_hash="feedc0ffee12",
                      start_model="/root/.cache/embedforge/models/all-MiniLM-L6-v2",
                      start_model_ref="all-MiniLM-L6-v2", start_model_id="5b1c0d7e9a2f4c81", mode="full",
                      loss="mnrl", inputs={"chunk": {"hash": "c0ffee", "shards": ["/tmp/runs/adi/chunk-c0ffee/"
                                                                                 "shards/part-00000.parquet"]}},
                      data={"source": "queries", "train_rows": 264, "negatives": 0, "quarantined": 0,
                            "val_queries": 51, "val_corpus": 82},
                      config={"promote": g["promote"]}, dims=[384, 96], before=BASE, after=TUNED,
                      history={"steps": 4, "best": None, "seconds": 9.1}, versions={"embedforge": "0.1.0"}, guard=g)


def test_kept_base_card_says_first_that_the_weights_are_the_base_models() -> None:
    g = guard(TUNED)
    assert kept_base(g) and g["promoted"] == "base"
    text = card(g)
    opening = text.split("## Validation")[0]
    assert "**The weights in this directory are the base model's, unchanged: `all-MiniLM-L6-v2` (model id " \
           "`5b1c0d7e9a2f4c81`).**" in opening
    assert "Fine-tuned by" not in text and "no fine-tuning is in these weights" in opening
    assert "| dim | nDCG@10 base (these weights) | nDCG@10 tuned (not kept) |" in text
    assert "| 384 | 0.6200 | 0.4100 |" in text  # base first: the published weights' scores
    lineage = text.split("## Lineage")[1].split("## Training")[0]
    assert "- start model: `all-MiniLM-L6-v2` (model id `5b1c0d7e9a2f4c81`)" in lineage
    assert "- weights: the start model's, unchanged (the tuned candidate was not promoted)" in lineage
    assert "**Not promoted**" in text and "0.4100 vs 0.6200" in text


def test_promoted_tuned_card_says_fine_tuned() -> None:
    better = {k: v + 0.3 for k, v in TUNED.items()}
    g = guard(better)
    assert not kept_base(g)
    text = card(g)
    assert text.split("## Validation")[0].count("Fine-tuned by embedforge (stage `train`, mode `full`") == 1
    assert "unchanged" not in text and "Not promoted" not in text
    assert "| dim | nDCG@10 before | nDCG@10 after |" in text
    assert "- weights: the `tuned` candidate, trained from the start model" in text


@pytest.mark.parametrize("base_kept", [True, False])
def test_sentence_transformers_part_keeps_base_model_and_says_unchanged(tmp_path: Path, minilm_path: Path,
                                                                        base_kept: bool) -> None:
    target = tmp_path / "model"
    shutil.copytree(minilm_path, target)
    g = guard(TUNED if base_kept else {k: v + 0.3 for k, v in TUNED.items()})
    text = write_model_card(target, title="adi", base_model="sentence-transformers/all-MiniLM-L6-v2", dims=[384, 96],
                            metrics=BASE if base_kept else TUNED, extra_markdown=card(g), base_kept=kept_base(g))
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"  # the weights' source, in both cases
    intro = "model with the unchanged weights of [sentence-transformers/all-MiniLM-L6-v2]"
    assert (intro in text) is base_kept
    assert ("finetuned from [sentence-transformers/all-MiniLM-L6-v2]" in text) is not base_kept
    assert "/tmp/" not in text and "/root/" not in text


def test_validation_table_has_mrr_next_to_ndcg_and_recall() -> None:
    with_mrr = {**BASE, "val_mrr@10_d384": 0.55}
    text = model_card(job="adi", stage_hash="0123456789ab", spec_hash="feedc0ffee12", start_model="m",
                      start_model_id="5b1c0d7e9a2f4c81", mode="full", loss="mnrl", inputs={}, data={},
                      config={}, dims=[384], before=with_mrr, after={**TUNED, "val_mrr@10_d384": 0.35},
                      history={}, versions={}, guard=None)
    assert "| dim | nDCG@10 before | nDCG@10 after | MRR@10 before | MRR@10 after | recall@10 before |" in text
    assert "| 384 | 0.6200 | 0.4100 | 0.5500 | 0.3500 | 0.9000 | 0.7000 |" in text
