"""Config of the ``train`` stage: fine-tune the embedding model (full, LoRA) or train an adapter on cached vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from embedforge.configs.base import StageConfig, no_hash

IN_BATCH_LOSSES = ("mnrl", "cached_mnrl", "gist")
"""Losses whose negatives are the other rows of the batch (gradient accumulation does not add negatives)."""


class TrainConfig(StageConfig):
    """Fine-tune on (query, positive[, hard negatives]) pairs from ``mine`` (or ``generate`` + ``chunk``)."""

    model: str = "base"
    """Model to start from: ``base`` (the job's base model), a packaged name or a local model directory.
    Hook for vocabulary extension: point it at an extended model directory."""
    query_kinds: list[Literal["llm", "title", "ict", "keyword"]] | None = None
    """Kinds of generated queries to train on (null: all; ``[]``: none, with ``judged_train_split`` only the judged
    queries); the validation queries keep every kind."""
    ict_keep_sentence: float = Field(0.1, ge=0, le=1)
    """Inverse cloze: share of ``ict`` rows whose positive keeps the query sentence; the others have it cut out."""
    mode: Literal["full", "lora", "adapter", "query"] = "full"
    """``full``: all weights; ``lora``: low-rank adapters merged into the weights at the end; ``adapter``: a small
    adapter on frozen, cached embeddings (minutes on a CPU); ``query``: only the query encoder trains, against
    the start model's vectors of every chunk of the corpus, which stay as they are (the saved model is a
    sentence-transformers ``Router``: the documents a user embedded with the start model need no re-embedding;
    ``embedforge.training.query_side``)."""
    loss: Literal["mnrl", "cached_mnrl", "triplet", "gist", "margin_mse", "distill_kl"] = "mnrl"
    """MultipleNegativesRanking, its cached (GradCache) form, Triplet, GISTEmbed with the start model as guide, or
    a distillation loss on the teacher's scores (needs ``teacher``): ``margin_mse`` (MarginMSE on the
    positive-minus-negative margins) or ``distill_kl`` (listwise KL divergence over the positive and k negatives)."""
    mnrl_weight: float = Field(0.0, ge=0)
    """Distillation losses: add this times MultipleNegativesRanking (in-batch + teacher negatives) to the loss."""
    teacher: Literal["none", "hybrid", "cross_encoder", "dense"] = "none"
    """Teacher for GPL-style pseudo-labels: it ranks the corpus for every training query, gives the hard negatives
    and their scores, and drops queries whose own passage it ranks low. ``hybrid``: BM25 + the start model fused
    by z-scores (no GPU); ``cross_encoder``: a CrossEncoder re-scoring the hybrid top ``teacher_depth``;
    ``dense``: another bi-encoder. ``none``: train on the mined (or in-batch) negatives."""
    teacher_model: str | None = None
    """The ``cross_encoder`` or ``dense`` teacher: a local directory, a cached or packaged name, or a hub id."""
    teacher_depth: int = Field(100, ge=10)
    """Candidates the teacher ranks per query (each of BM25 and dense for ``hybrid``; the evaluate stage fuses 100)."""
    teacher_temperature: float | Literal["auto"] = 1.0
    """Teacher scores are divided by this before the distillation loss, whose student scores are ``scale`` times
    the cosine similarity: choose it so the two spreads are comparable. ``auto``: the median teacher margin
    (positive minus first negative) over the start model's median ``scale``-times-cosine margin on the same rows."""
    false_negative_margin: float = Field(0.5, ge=0)
    """A candidate the teacher scores within this of the positive is not used as a negative (teacher units)."""
    query_filter_rank: int = Field(3, ge=0)
    """Drop a training query whose own passage the teacher does not rank in its top this many (0: keep all)."""
    anchor_weight: float = Field(0.0, ge=0)
    """Learning without forgetting: add this times the KL divergence between the start model's and the student's
    score distributions over each batch (every query against every passage of the batch, full dimension) to the
    loss, so that rankings the training rows do not ask to change stay as the start model had them (0: off). Costs
    one forward pass of the frozen start model per batch. Not in adapter mode, not with ``cached_mnrl``."""
    weight_averaging: float = Field(0.0, ge=0, lt=1)
    """WiSE-FT: after training, also try the average of the tuned and start weights with this share of the start
    model (0: off); the guard measures it like any checkpoint. Not in adapter mode."""
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
    nproc: int = Field(1, ge=1)
    """Processes of data-parallel training (DDP via torchrun; one per GPU, or gloo on a CPU). In-batch negatives are
    gathered across them: the effective batch is ``nproc`` × ``batch_size``. Not used in adapter mode."""
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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", validation_alias=AliasChoices("precision", "dtype"))
    """Compute dtype (``dtype:`` is accepted too, as the other stages spell it). ``auto``: bf16 (or fp16) on CUDA;
    on CPU bf16 where the CPU has native bf16 (AVX512-BF16, AMX), fp32 elsewhere; fp16 needs CUDA."""
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
    """Keep the checkpoint (adapter: epoch) with the best validation score at the primary dimension, not the last."""
    promote: Literal["if_better", "always"] = "if_better"
    """Regression guard. ``if_better``: the stage's model is the tuned one only if it beats the start model on the
    validation signal at the primary dimension, else the start model itself (the log and model card say so);
    ``always``: the tuned model whatever the scores."""
    stop_behind_start: int = Field(2, ge=0)
    """Stop training once the tuned model has scored at or below the start model on the validation signal at the
    primary dimension at this many validations in a row (0: never). Only with ``promote: if_better`` and no
    ``weight_averaging``: the guard would then publish the start model unless a later checkpoint overtakes it, so
    the steps left would most likely be spent on a model it discards."""
    early_stopping_patience: int = Field(0, ge=0)
    """Stop training once this many validations in a row have not beaten the best checkpoint so far on the
    validation signal at the primary dimension (transformers' ``EarlyStoppingCallback``; 0: never). Needs
    ``keep_best``, so the kept model is that best checkpoint. Unlike ``stop_behind_start`` it also ends a run that
    rose above the start model and then fell back, the usual course on a strong base model."""
    validation: Literal["synthetic", "teacher", "both", "judged"] = "teacher"
    """Validation signal of the guard, the best-checkpoint choice and ``stop_behind_start``. ``teacher``
    (default): nDCG@10 against the teacher's graded top 10 for the held-out queries (``teacher`` none: the hybrid
    teacher, BM25 + the start model); ``synthetic``: nDCG@10 of the held-out queries against their source passage;
    ``both``: the mean; ``judged``: nDCG@10 of real queries with human judgements (``judged_queries``), the one
    signal that measures what a user will see. On the development sets the synthetic signal rose in every
    fine-tuning run, including those that lowered real-query nDCG; the teacher signal fell when real quality fell,
    and also in most runs where it rose: as a guard it errs toward keeping the base (docs/adaptation.md)."""
    judged_queries: str | None = None
    """Real queries with human judgements, measured at every validation whatever the signal (metrics
    ``val_judged_*``, in the manifest and the model card): a BEIR directory or dataset reference (``beir:scifact``)
    whose ``queries.jsonl`` and ``qrels/<judged_split>.tsv`` are read (its corpus is not: the qrels' corpus ids
    must be the doc ids of the job's ingested documents). Each query searches the validation corpus, which gains
    every chunk of its judged documents; a document ranks at its best chunk. A few dozen queries are enough to
    catch a model that got worse; never use the queries the job is evaluated on."""
    judged_split: str = "dev"
    """Which ``qrels/<split>.tsv`` of ``judged_queries`` to read."""
    judged_train_split: str | None = None
    """Also train on the judged queries of ``qrels/<this split>.tsv`` of ``judged_queries`` (null: no): each
    (query, document) pair judged relevant becomes a row whose positive is the document's chunk the start model
    ranks highest, with hard negatives from the start model's ranking when the other rows have them
    (``embedforge.training.judged_rows``). Divide one set of judgements first (``embedforge datasets split DIR
    --split train``: ``train-dev`` validates, ``train-heldout`` trains); it must differ from ``judged_split`` and
    from what the job is evaluated on. ``query_kinds: []`` trains on the judged queries alone."""
    judged_train_repeat: Annotated[int, Field(ge=1, le=100)] | Literal["balance"] = "balance"
    """Each judged training row appears this many times per epoch (1 to 100). ``balance``: as many times as makes
    the judged rows about as many as the synthetic ones (a few hundred real queries among tens of thousands of
    synthetic ones are otherwise a small share of the steps; once when ``query_kinds: []``). Half and half was
    measured ahead of judged rows alone on SciFact and Cranfield (docs/adaptation.md)."""
    token_weights: Literal["none", "idf"] = "idf"
    """Pooling weights of the saved model. ``idf``: each token's state is weighted by its BM25 idf in the job's
    chunks (floor and power below) before mean pooling, stored as sentence-transformers' ``WordWeights`` module,
    so rare domain terms count more (training-free; applied to whichever model the guard promotes, base included;
    see ``embedforge.training.token_weights`` for what it measured). ``none``: plain mean pooling."""
    token_weights_power: float = Field(0.5, gt=0, le=2)
    """Token weights: the idf is raised to this power (0.5 was best of 0.25/0.5/1 on the development sets)."""
    token_weights_floor: float = Field(0.5, ge=0)
    """Token weights: the idf is clamped below at this value first (special tokens and stop words get floor**power)."""
    corpus_rotation: Literal["none", "pca"] = "pca"
    """Axes of the saved model. ``pca``: the embedding space is rotated onto the principal axes of the model's
    vectors of the job's chunks (a seeded sample), largest first, stored as a bias-free identity ``Dense`` module,
    so Matryoshka truncation keeps the directions this corpus varies along most. Orthogonal: full-dimension
    results do not change; truncated ones do (applied after the pooling weights, to whichever model the guard
    promotes; see ``embedforge.training.corpus_rotation``). ``none``: the model's own axes."""
    corpus_rotation_passages: int = Field(4000, ge=2)
    """Corpus rotation: at most this many chunks (a seeded sample) are encoded to fit it."""
    teacher_gains: list[int] = Field(default_factory=lambda: [3, 2, 2, 1, 1, 1, 1, 1, 1, 1])
    """Teacher-agreement validation: gain of the teacher's rank 1, 2, … (at most 10 ranks)."""
    teacher_positive_gain: int = Field(0, ge=0)
    """Teacher-agreement validation: the query's own passage gets at least this gain (0: only the teacher's ranks)."""
    primary_dim: int | None = Field(None, gt=0)
    """Dimension the guard and the best-checkpoint choice look at (null: the largest Matryoshka dimension)."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """When the queries have no ``val`` split: fraction of documents whose queries are held out for validation."""
    eval_corpus_max: int = no_hash(20000)
    """Most chunks in the validation corpus (the val positives are always in it; the rest is a seeded sample). The
    chunks of the judged queries' documents are added on top."""
    save_total_limit: int = no_hash(2)
    """Checkpoints kept in the stage directory (the best one is always kept)."""
    dataloader_workers: int = no_hash(0)
    """Data loader worker processes."""

    def input_fingerprint(self) -> list[str] | None:
        """Content hash of a local ``teacher_model`` directory, so replacing the teacher re-runs train."""
        if not self.teacher_model or self.teacher == "none" or not Path(self.teacher_model).expanduser().exists():
            return None
        from embedforge.data.fingerprint import path_fingerprint

        return [path_fingerprint(self.teacher_model)]

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
        if self.primary_dim is not None and self.matryoshka_dims and self.primary_dim not in self.matryoshka_dims:
            raise ValueError(f"primary_dim {self.primary_dim} is not one of matryoshka_dims {self.matryoshka_dims}")
        if self.loss in ("margin_mse", "distill_kl"):
            if self.teacher == "none":
                raise ValueError(f"loss '{self.loss}' trains on teacher scores: set teacher (hybrid, cross_encoder, "
                                 f"dense)")
            if self.max_negatives < 1:
                raise ValueError(f"loss '{self.loss}' needs max_negatives >= 1 (teacher negatives per row)")
            if self.mode == "adapter":
                raise ValueError(f"loss '{self.loss}' works with mode full or lora (adapter mode trains with MNRL)")
        if isinstance(self.teacher_temperature, float) and self.teacher_temperature <= 0:
            raise ValueError(f"teacher_temperature must be > 0 or 'auto', got {self.teacher_temperature}")
        if self.teacher in ("cross_encoder", "dense") and not self.teacher_model:
            raise ValueError(f"teacher '{self.teacher}' needs teacher_model (a local directory, cache or hub id)")
        if len(self.teacher_gains) > 10 or any(g < 0 for g in self.teacher_gains) or not any(self.teacher_gains):
            raise ValueError(f"teacher_gains: at most 10 non-negative gains, at least one positive "
                             f"(got {self.teacher_gains})")
        if self.anchor_weight and self.mode == "adapter":
            raise ValueError("anchor_weight works on full or lora training, not mode 'adapter'")
        if self.anchor_weight and self.loss == "cached_mnrl":
            raise ValueError("anchor_weight needs the loss's own forward pass over the whole batch; 'cached_mnrl' "
                             "embeds it in mini-batches without gradients first: use loss 'mnrl'")
        if self.mode == "query":
            unsupported = {"loss": self.loss != "mnrl", "teacher": self.teacher != "none",
                           "anchor_weight": bool(self.anchor_weight), "weight_averaging": bool(self.weight_averaging),
                           "nproc": self.nproc > 1}
            named = [k for k, bad in unsupported.items() if bad]
            if named:
                raise ValueError(f"mode 'query' trains with a softmax over the whole corpus (loss mnrl, no teacher, "
                                 f"one process); unset {', '.join(named)}")
        if self.weight_averaging and self.mode == "adapter":
            raise ValueError("weight_averaging works on full or lora training, not mode 'adapter'")
        if self.early_stopping_patience and not self.keep_best:
            raise ValueError("early_stopping_patience needs keep_best: true (training stops after the best checkpoint, "
                             "which keep_best restores)")
        if self.judged_train_split is not None:
            if not self.judged_queries:
                raise ValueError("judged_train_split needs judged_queries (the BEIR directory or dataset reference "
                                 "whose qrels/<judged_train_split>.tsv holds the queries to train on)")
            if self.judged_train_split == self.judged_split:
                raise ValueError(f"judged_train_split and judged_split are both '{self.judged_split}': the queries "
                                 f"that train the model would also choose its checkpoint; divide them with "
                                 f"embedforge datasets split DIR --split {self.judged_split}")
            if self.loss in ("margin_mse", "distill_kl"):
                raise ValueError(f"judged_train_split: loss '{self.loss}' trains on teacher scores, which judged "
                                 f"rows do not have; use mnrl, cached_mnrl, gist or triplet")
        if self.query_kinds == [] and self.judged_train_split is None:
            raise ValueError("query_kinds: [] leaves no queries to train on (set judged_train_split, or name kinds)")
        if self.validation == "judged" and not self.judged_queries:
            raise ValueError("validation 'judged' needs judged_queries (a BEIR directory or dataset reference whose "
                             "qrels judge the job's documents)")
        if self.loss == "triplet" and self.max_negatives < 1:
            raise ValueError("loss 'triplet' needs max_negatives >= 1 (it trains on mined hard negatives)")
        return self
