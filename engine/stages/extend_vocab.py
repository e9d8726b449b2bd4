"""Stage ``extend_vocab``: the start model with whole tokens for the domain terms its tokenizer shreds.

1. Decide: ``when: always``/``never``, or ``auto`` — follow the ``analyze_vocab`` decision in its manifest (or,
   without that stage in the job, compare the ratio measured here with ``threshold``).
2. Pick the ``top_n`` most frequent terms (≥ ``min_frequency`` occurrences, ≥ ``min_term_chars`` characters) that
   the start model's tokenizer splits into ≥ ``min_pieces`` pieces.
3. Add them as whole-word tokens, grow the embedding matrix, start each new row at the mean of its old pieces'
   rows (``embedforge.training.vocab_extension``), and save the SentenceTransformer directory ``model/``.

Without extension ``model`` is a symbolic link to the start model, so ``train`` can always start from
``extend_vocab`` (``stages.train.model: extend_vocab``) and gets the extended model only when it was made.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from embedforge.configs.vocab import ExtendVocabConfig
from embedforge.progress import track
from embedforge.stages.base import StageContext, StageFailed
from embedforge.training.vocab_extension import extend_model
from embedforge.vocab.analysis import VocabAnalysis, VocabAnalyzer, load_tokenizer
from embedforge.vocab.corpus import CorpusError, shard_texts


def measure(ctx: StageContext, model_dir: str) -> VocabAnalysis:
    """Word and term counts of the corpus under the start model's tokenizer."""
    cfg: ExtendVocabConfig = ctx.config
    analyzer = VocabAnalyzer([load_tokenizer(model_dir, name="start model")])
    try:
        with track("extend_vocab: count terms", unit="docs") as progress:
            for batch in shard_texts(ctx.input_dir("ingest"), cfg.batch_docs):
                analyzer.add(batch)
                progress.advance(len(batch))
        return analyzer.result()
    except (CorpusError, ValueError) as exc:
        raise StageFailed(f"extend_vocab: {exc} (documents in {ctx.input_dir('ingest')})") from exc


def decide(ctx: StageContext, analysis: VocabAnalysis) -> dict[str, Any]:
    """The extension decision with its reason."""
    cfg: ExtendVocabConfig = ctx.config
    if cfg.when != "auto":
        return {"extend": cfg.when == "always", "reason": f"when: {cfg.when}"}
    if ctx.has_input("analyze_vocab"):
        decision = ctx.inputs["analyze_vocab"].manifest().get("decision")
        if not decision:
            raise StageFailed("extend_vocab: the analyze_vocab manifest has no 'decision' (re-run analyze_vocab)")
        return {**decision, "reason": f"analyze_vocab: {decision['reason']}"}
    return analysis.decision(cfg.threshold)


def run(ctx: StageContext) -> None:
    cfg: ExtendVocabConfig = ctx.config
    start = ctx.resolve_model(cfg.model)
    target = ctx.out_dir / "model"
    partial = ctx.out_dir / "model.partial"
    for stale in (target, partial):  # an unfinished earlier run: start over (the stage is one step)
        if stale.is_symlink() or stale.is_file():
            stale.unlink()
        elif stale.exists():
            shutil.rmtree(stale)
    analysis = measure(ctx, start)
    decision = decide(ctx, analysis)
    ctx.extra["decision"] = decision
    ctx.extra["ratio_before"] = round(analysis.tokenizers[0].ratio, 4)
    if not decision["extend"]:
        os.symlink(Path(start).resolve(), target, target_is_directory=True)
        ctx.extra["extension"] = {"added": 0, "model_dir": str(target), "linked_to": str(Path(start).resolve())}
        return
    terms = analysis.fragmented_terms(min_pieces=cfg.min_pieces, top=cfg.top_n, min_chars=cfg.min_term_chars,
                                      min_frequency=cfg.min_frequency)
    if not terms:
        raise StageFailed(f"extend_vocab: no term occurs ≥ {cfg.min_frequency} times and splits into "
                          f"≥ {cfg.min_pieces} pieces; lower min_frequency/min_pieces or set when: never")
    result = extend_model(start, [t.term for t in terms], partial, min_pieces=cfg.min_pieces)
    os.replace(partial, target)
    after = VocabAnalyzer([load_tokenizer(target, name="extended")])
    for batch in shard_texts(ctx.input_dir("ingest"), cfg.batch_docs):
        after.add(batch)
    ctx.count("terms_added", len(result.added))
    ctx.extra["ratio_after"] = round(after.result().tokenizers[0].ratio, 4)
    ctx.extra["extension"] = {**result.manifest(), "model_dir": str(target)}
