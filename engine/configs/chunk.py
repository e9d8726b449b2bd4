"""Config of the ``chunk`` stage: token-aware splitting with the embedding model's tokenizer."""

from __future__ import annotations

from pydantic import Field, model_validator

from embedforge.configs.base import StageConfig, no_hash


class ChunkConfig(StageConfig):
    """Split documents into chunks of at most ``max_tokens`` tokens of the embedding model's tokenizer."""

    tokenizer: str = "base"
    """Model whose tokenizer counts tokens: ``base`` (the job's base model), a packaged name or a path."""
    max_tokens: int = Field(512, gt=8)
    """Most tokens in a chunk, special tokens included (the model's max sequence length caps it)."""
    overlap_tokens: int = Field(0, ge=0)
    """Tokens of the previous chunk repeated at the start of the next (whole sentences only)."""
    min_tokens: int = Field(32, ge=0)
    """A last chunk shorter than this is merged into the previous one when they fit together."""
    batch_docs: int = no_hash(256)
    """Documents tokenized per batch."""

    @model_validator(mode="after")
    def _check(self) -> ChunkConfig:
        if self.overlap_tokens >= self.max_tokens // 2:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be below half of max_tokens ({self.max_tokens})")
        return self
