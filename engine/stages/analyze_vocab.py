"""Stage ``analyze_vocab``: how badly does the base tokenizer split this corpus? Decide on vocabulary extension.

Streams the ingest document shards through the base model's tokenizer (and any others listed in ``tokenizers``),
measures the token-to-word ratio (overall and per document), the [UNK] rate and the most fragmented frequent
terms, and writes ``vocab_report.md``, ``vocab_ratio_hist.png``, ``vocab_stats.json`` and
``fragmented_terms.tsv``. The decision (base ratio against ``threshold``) goes to the manifest as ``decision``;
``extend_vocab`` with ``when: auto`` follows it.
"""

from __future__ import annotations

import time

from embedforge.configs.vocab import AnalyzeVocabConfig
from embedforge.data.shards import count_rows
from embedforge.progress import track
from embedforge.stages.base import StageContext, StageFailed
from embedforge.vocab.analysis import VocabAnalyzer, load_tokenizer
from embedforge.vocab.corpus import CorpusError, shard_texts
from embedforge.vocab.report import write_report


def run(ctx: StageContext) -> None:
    cfg: AnalyzeVocabConfig = ctx.config
    documents_dir = ctx.input_dir("ingest")
    views = [load_tokenizer(ctx.resolve_model("base"), name=f"base: {ctx.job.base_model}")]
    views += [load_tokenizer(ctx.resolve_model(ref), name=ref) for ref in cfg.tokenizers]
    analyzer = VocabAnalyzer(views)
    t0 = time.perf_counter()
    try:
        with track("analyze_vocab", total=count_rows(documents_dir), unit="docs") as progress:
            for batch in shard_texts(documents_dir, cfg.batch_docs):
                analyzer.add(batch)
                progress.advance(len(batch))
        analysis = analyzer.result()
    except (CorpusError, ValueError) as exc:
        raise StageFailed(f"analyze_vocab: {exc} (documents in {documents_dir})") from exc
    seconds = time.perf_counter() - t0
    summary = write_report(analysis, ctx.out_dir, threshold=cfg.threshold, min_pieces=cfg.min_pieces,
                           top_terms=cfg.top_terms, min_chars=cfg.min_term_chars, source=ctx.job.name)
    ctx.count("documents", analysis.documents)
    ctx.count("words", analysis.words)
    ctx.throughput["words_per_s"] = round(analysis.words / max(seconds, 1e-9), 1)
    ctx.extra["decision"] = summary["decision"]
    ctx.extra["tokenizers"] = summary["tokenizers"]
    ctx.extra["top_fragmented_terms"] = summary["fragmented_terms"][:20]
