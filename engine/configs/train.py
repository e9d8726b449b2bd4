"""Config of the ``train`` stage: fine-tune the embedding model (full, LoRA) or train an adapter on cached vectors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from embedforge.configs.base import StageConfig, no_hash

IN_BATCH_LOSSES = ("mnrl", "cached_mnrl", "gist")
"""Losses whose negatives are the other rows of the batch (gradient accumulation does not add negatives)."""


class TrainConfig(StageConfig):
    """Fine-tune on (query, positive[, hard negatives]) pairs from ``mine`` (or ``generate`` + ``chunk``)."""

    model: str = "base"
    """Model to start from: ``base`` (the job's base model), a packaged name or a local model directory.
    Hook for vocabulary extension: point it at an extended model directory."""
    query_kinds: list[Literal["llm", "title", "ict", "keyword"]] | None = None
    """Kinds of generated queries to train on (null: all); the validation queries keep every kind."""
    ict_keep_sentence: float = Field(0.1, ge=0, le=1)
    """Inverse cloze: share of ``ict`` rows whose positive keeps the query sentence; the others have it cut out."""
    mode: Literal["full", "lora", "adapter"] = "full"
    """``full``: all weights; ``lora``: low-rank adapters merged into the weights at the end; ``adapter``: a small
    adapter on frozen, cached embeddings (minutes on a CPU)."""
    loss: Literal["mnrl", "cached_mnrl", "triplet", "gist"] = "mnrl"
    """MultipleNegativesRanking, its cached (GradCache) form, Triplet, or GISTEmbed with the start model as guide."""
    matryoshka_dims: list[int] = Field(default_factory=lambda: [384, 256, 128, 64])
    """Dimensions the loss is applied at (Matryoshka); sorted descending, each at most the model's dimension;
    empty list: the plain loss at full dimension."""
    matryoshka_weights: list[float] | None = None
    """Weight of each Matryoshka dimension (null: all 1)."""
    max_negatives: int = Field(1, ge=0)
    """Hard negatives per row taken from the mined triples (columns negative_1..k); 0 uses in-batch negatives only."""
    scale: float = Field(20.0, gt=0)
    """Similarity scale (inverse temperature) of the ranking losses."""
    triplet_margin: float = Field(5.0, gt=0)
    """Margin of TripletLoss (euclidean distance)."""
    gist_temperature: float = Field(0.01, gt=0)
    """Temperature of GISTEmbedLoss."""
    mini_batch_size: int = no_hash(16)
    """Mini-batch of CachedMNRL (memory stays constant whatever the batch size; same result)."""
    batch_size: int = Field(32, ge=2)
    """Rows per batch (in-batch negatives grow with it)."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Batches per optimizer step (does NOT add in-batch negatives; prefer cached_mnrl with a larger batch)."""
    learning_rate: float = Field(2e-5, gt=0)
    """Peak learning rate (adapter mode uses ``adapter_learning_rate``)."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Fraction of steps of linear warmup."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay."""
    epochs: float = Field(1.0, gt=0, le=10)
    """Passes over the training rows (1–3: more risks catastrophic forgetting)."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimizer steps (overrides ``epochs``; for quick runs)."""
    max_seq_length: int | None = Field(None, gt=8)
    """Truncate inputs to this many tokens while training (null: the model's own limit)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """``auto``: bf16 (or fp16) on CUDA, fp32 on CPU; ``bf16`` also works on CPUs with bf16 support; fp16 needs CUDA."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% slower)."""
    optimizer: Literal["adamw", "adamw_8bit"] = "adamw"
    """``adamw_8bit``: bitsandbytes 8-bit AdamW (optimizer state in 8 bits)."""
    lora_r: int = Field(16, ge=1)
    """LoRA rank (mode ``lora``)."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA alpha (mode ``lora``)."""
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    """LoRA dropout (mode ``lora``)."""
    adapter_kind: Literal["linear", "two_layer"] = "linear"
    """Adapter mode: one residual linear layer, or two residual layers with a GELU."""
    adapter_epochs: int = Field(20, ge=1)
    """Adapter mode: passes over the cached embeddings."""
    adapter_learning_rate: float = Field(1e-3, gt=0)
    """Adapter mode: AdamW learning rate."""
    eval_steps: int = Field(50, ge=1)
    """Evaluate on the held-out val split every this many steps (adapter mode: every epoch)."""
    keep_best: bool = True
    """Keep the checkpoint (adapter: epoch) with the best val nDCG@10 at the largest dimension, not the last one."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """When the queries have no ``val`` split: fraction of documents whose queries are held out for validation."""
    eval_corpus_max: int = no_hash(20000)
    """Most chunks in the validation corpus (the val positives are always in it; the rest is a seeded sample)."""
    save_total_limit: int = no_hash(2)
    """Checkpoints kept in the stage directory (the best one is always kept)."""
    dataloader_workers: int = no_hash(0)
    """Data loader worker processes."""

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims_sorted(cls, dims: list[int]) -> list[int]:
        if any(d <= 0 for d in dims):
            raise ValueError(f"matryoshka_dims must be positive, got {dims}")
        if len(set(dims)) != len(dims) or dims != sorted(dims, reverse=True):
            raise ValueError(f"matryoshka_dims must be distinct and sorted descending, got {dims}")
        return dims

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.matryoshka_weights is not None and len(self.matryoshka_weights) != len(self.matryoshka_dims):
            raise ValueError(f"matryoshka_weights has {len(self.matryoshka_weights)} values but matryoshka_dims has "
                             f"{len(self.matryoshka_dims)}")
        if self.loss == "triplet" and self.max_negatives < 1:
            raise ValueError("loss 'triplet' needs max_negatives >= 1 (it trains on mined hard negatives)")
        return self
