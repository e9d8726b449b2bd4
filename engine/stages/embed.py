"""Stage ``embed``: the job's chunks (or any corpus) → embedding shards per Matryoshka dim → FAISS indexes.

Model: ``auto`` is the job's trained model when the job trains, else its base model. Passages are
``passage_text(title, text)``. One output shard per input block; a killed run resumes at the first missing
shard. Bad rows (missing id, empty text) are quarantined and counted. ``embedforge embed`` runs the same
:func:`embedforge.encoding.embed_corpus.embed_corpus` outside a job.
"""

from __future__ import annotations

from embedforge.configs.embed import EmbedConfig
from embedforge.distributed.pool import Stalled
from embedforge.encoding.embed_corpus import embed_corpus
from embedforge.stages.base import StageContext, StageFailed


def run(ctx: StageContext) -> None:
    cfg: EmbedConfig = ctx.config
    model_ref = cfg.model if cfg.model != "auto" else ("train" if ctx.has_input("train") else "base")
    model_path = ctx.resolve_model(model_ref)
    chunks = cfg.input == "chunk"
    source = ctx.input_dir("chunk") if chunks else cfg.input
    if chunks and cfg.format == "auto":
        cfg = cfg.model_copy(update={"format": "chunks"})

    try:
        result = embed_corpus(cfg, model_path, source, ctx.out_dir, device=ctx.job.device)
    except (Stalled, ValueError) as exc:
        raise StageFailed(str(exc) if isinstance(exc, Stalled) else f"embed: {exc}") from None  # Stalled names it

    ctx.extra["model"] = {"ref": model_ref, **result.model}
    for key, value in result.totals.items():
        ctx.count(f"run_{key}", value)
    ctx.throughput.update(result.throughput)
    if cfg.index is not None:
        ctx.extra["indexes"] = result.indexes
