"""Typed configuration: one pydantic model per stage, each in its own module (light imports only)."""

from embedforge.configs.base import StageConfig, hashed_fields

__all__ = ["StageConfig", "hashed_fields"]
