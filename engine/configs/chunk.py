"""Config of the ``chunk`` stage: token-aware splitting with the embedding model's tokenizer."""

from __future__ import annotations

from pydantic import Field, model_validator

from embedforge.configs.base import StageConfig, no_hash


class ChunkConfig(StageConfig):
    """Split documents into chunks of at most ``max_tokens`` tokens of the embedding model's tokenizer."""

    tokenizer: str = "base"
    """Model whose tokenizer counts tokens: ``base`` (the job's base model), a packaged name or a path."""
    max_tokens: int = Field(512, gt=8, le=1_000_000)
    """Most tokens in a chunk, special tokens included (the model's max sequence length caps it)."""
    overlap_tokens: int = Field(0, ge=0)
    """Tokens of the previous chunk repeated at the start of the next (whole sentences only)."""
    max_chars: int | None = Field(None, ge=64)
    """Most characters in a chunk (null: 16 per token of the limit). Bounds chunks of text the tokenizer reads
    as few tokens, such as a long run without spaces (one unknown token)."""
    max_word_chars: int = Field(100, ge=8, le=10_000)
    """Words longer than this are cut into pieces of this many characters (counted in the manifest as
    ``long_words_split``). 100 is where BERT's WordPiece stops reading a word and emits one unknown token."""
    min_tokens: int = Field(32, ge=0)
    """A last chunk shorter than this is merged into the previous one when they fit together."""
    batch_docs: int = no_hash(256)
    """Documents tokenized per batch."""

    @model_validator(mode="after")
    def _check(self) -> ChunkConfig:
        if self.max_chars is not None and self.max_chars < self.max_word_chars:
            raise ValueError(f"max_chars ({self.max_chars}) must be at least max_word_chars ({self.max_word_chars})")
        if self.overlap_tokens >= self.max_tokens // 2:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be below half of max_tokens ({self.max_tokens})")
        return self
