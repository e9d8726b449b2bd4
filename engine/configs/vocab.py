"""Configs of the vocabulary stages: ``analyze_vocab``, ``train_tokenizer`` and ``extend_vocab``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from embedforge.configs.base import StageConfig, no_hash

DEFAULT_THRESHOLD = 1.25
"""Token-to-word ratio above which the base tokenizer is said to shred the corpus."""


class AnalyzeVocabConfig(StageConfig):
    """Measure how the base tokenizer (and others) split the corpus; decide whether to extend the vocabulary."""

    tokenizers: list[str] = Field(default_factory=list)
    """Other tokenizers to compare with the base model's: packaged model names, model dirs or tokenizer.json files."""
    threshold: float = Field(DEFAULT_THRESHOLD, gt=0)
    """Token-to-word ratio of the base tokenizer above which the decision is to extend the vocabulary."""
    min_pieces: int = Field(3, ge=2)
    """A term counts as fragmented when the base tokenizer splits it into at least this many pieces."""
    top_terms: int = Field(50, ge=0)
    """Fragmented terms listed in the report (most frequent first)."""
    min_term_chars: int = Field(4, ge=1)
    """Shortest term (in characters) listed as fragmented."""
    batch_docs: int = no_hash(1024)
    """Documents tokenized per batch."""


class TrainTokenizerConfig(StageConfig):
    """Train a WordPiece or BPE tokenizer on the corpus with the base tokenizer's pipeline and special-token ids."""

    algorithm: Literal["auto", "wordpiece", "bpe"] = "auto"
    """``auto``: the base tokenizer's own model type (WordPiece for BERT-family models)."""
    vocab_size: int = Field(32_000, ge=128)
    """Target vocabulary size (special tokens included; a small corpus may give fewer tokens)."""
    min_frequency: int = Field(2, ge=1)
    """A merge / subword must occur at least this often to enter the vocabulary."""
    limit_alphabet: int = Field(1000, ge=10)
    """Most distinct initial characters kept (rarer characters become [UNK])."""
    batch_docs: int = no_hash(1024)
    """Documents read per batch."""


class ExtendVocabConfig(StageConfig):
    """Add frequent domain terms the base tokenizer shreds as whole tokens; resize and initialize embeddings."""

    when: Literal["auto", "always", "never"] = "never"
    """``auto``: extend when the analyze_vocab decision says so (ratio above its threshold; computed here with
    ``threshold`` when the job has no analyze_vocab); ``always``/``never`` force it. Without extension the stage's
    ``model`` is a link to the start model. Default ``never``: on SciFact (ratio 1.29) extension lowered nDCG@10
    untrained (-0.028) and after fine-tuning on 919 pairs (-0.018 vs the same fine-tune without it); see
    docs/vocab.md."""
    model: str = "base"
    """Model to extend: ``base`` (the job's base model), a packaged name or a model directory."""
    top_n: int = Field(500, ge=1)
    """Most frequent fragmented terms to add."""
    min_pieces: int = Field(3, ge=2)
    """Only terms the base tokenizer splits into at least this many pieces are added."""
    min_frequency: int = Field(5, ge=1)
    """Only terms occurring at least this often in the corpus are added."""
    min_term_chars: int = Field(4, ge=1)
    """Only terms of at least this many characters are added."""
    threshold: float = Field(DEFAULT_THRESHOLD, gt=0)
    """Ratio threshold used by ``when: auto`` when the job has no analyze_vocab stage."""
    batch_docs: int = no_hash(1024)
    """Documents tokenized per batch."""
