"""Stage ``train_tokenizer``: a domain WordPiece/BPE tokenizer with the base model's pipeline and special ids.

Trains on the ingest document shards (streamed), keeps the base tokenizer's normalizer, pre-tokenizer,
post-processor and special tokens at their base ids, and saves the versioned artifact
``tokenizer-<sha12>.json`` (sha256 in the manifest) plus a ``tokenizer/`` directory ``transformers`` can load.
The manifest also compares the token-to-word ratio of the new and the base tokenizer on the same corpus.
"""

from __future__ import annotations

from collections.abc import Iterator

from embedforge.configs.vocab import TrainTokenizerConfig
from embedforge.data.shards import count_rows
from embedforge.stages.base import StageContext, StageFailed
from embedforge.vocab.analysis import analyze, load_tokenizer, tokenizer_view
from embedforge.vocab.corpus import CorpusError, shard_texts
from embedforge.vocab.tokenizer_training import (
    base_algorithm,
    save_hf_dir,
    save_versioned,
    special_tokens,
    train_tokenizer,
)


def run(ctx: StageContext) -> None:
    cfg: TrainTokenizerConfig = ctx.config
    documents_dir = ctx.input_dir("ingest")
    base_dir = ctx.resolve_model("base")
    base = load_tokenizer(base_dir, name=f"base: {ctx.job.base_model}")

    def texts() -> Iterator[str]:
        for batch in shard_texts(documents_dir, cfg.batch_docs):
            yield from batch

    try:
        tokenizer = train_tokenizer(texts(), base.tokenizer, algorithm=cfg.algorithm, vocab_size=cfg.vocab_size,
                                    min_frequency=cfg.min_frequency, limit_alphabet=cfg.limit_alphabet,
                                    length=count_rows(documents_dir))
        comparison = analyze(shard_texts(documents_dir, cfg.batch_docs), [base, tokenizer_view(tokenizer, "trained")])
    except (CorpusError, ValueError) as exc:
        raise StageFailed(f"train_tokenizer: {exc} (documents in {documents_dir})") from exc
    algorithm = base_algorithm(base.tokenizer) if cfg.algorithm == "auto" else cfg.algorithm
    artifact = save_versioned(tokenizer, ctx.out_dir, algorithm)
    save_hf_dir(tokenizer, base_dir, ctx.out_dir / "tokenizer")
    base_stats, new_stats = comparison.tokenizers
    ctx.count("documents", comparison.documents)
    ctx.extra["tokenizer"] = {**artifact.manifest(), "base_special_tokens": special_tokens(base.tokenizer)}
    ctx.extra["ratio"] = {"base": round(base_stats.ratio, 4), "trained": round(new_stats.ratio, 4)}
    base_vocab = set(base.tokenizer.get_vocab())
    ctx.extra["vocab_overlap_with_base"] = round(len(base_vocab & set(tokenizer.get_vocab())) / artifact.vocab_size, 4)

