"""The base of every config model: unknown keys are errors, every field documents itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StageConfig(BaseModel):
    """Base for stage configs. Attribute docstrings become field descriptions (shown by ``embedforge validate``).

    A field that does not change a stage's result (batch sizes, threads, progress) is declared with
    ``Field(default, json_schema_extra=NO_HASH)`` and left out of the stage hash.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True,
                              frozen=False, protected_namespaces=())


NO_HASH: dict[str, Any] = {"hash": False}
"""Marker for ``json_schema_extra``: this field does not change results and is left out of the stage hash."""


def no_hash(default: Any, **kwargs: Any) -> Any:
    """A field excluded from the stage hash (``batch_size: int = no_hash(64)``)."""
    return Field(default, json_schema_extra=NO_HASH, **kwargs)


def hashed_fields(config: BaseModel) -> dict[str, Any]:
    """The config as a JSON-able dict without the fields marked :data:`NO_HASH` (recursively)."""
    out: dict[str, Any] = {}
    for name, field in type(config).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("hash") is False:
            continue
        value = getattr(config, name)
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return hashed_fields(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
