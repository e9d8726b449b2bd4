"""The base of every config model: unknown keys are errors, every field documents itself."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

NO_HASH: dict[str, Any] = {"hash": False}
"""Marker for ``json_schema_extra``: this field does not change results and is left out of the stage hash."""


def no_hash(default: Any, **kwargs: Any) -> Any:
    """A field excluded from the stage hash (``batch_size: int = no_hash(64)``)."""
    return Field(default, json_schema_extra=NO_HASH, **kwargs)


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|K|KB|KiB|M|MB|MiB|G|GB|GiB|T|TB|TiB)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}


def parse_memory(value: str | int) -> int:
    """``"16GiB"`` → bytes (also ``512M``, ``2.5GB``, or a plain number of bytes)."""
    if isinstance(value, int):
        return value
    m = _MEMORY.match(value)
    if not m:
        raise ValueError(f"memory '{value}' is not a size like 16GiB, 512M or 2000000000")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


class ResourcesConfig(BaseModel):
    """What one stage asks of a cluster node (Ray or Slurm); unset values mean "what the local machine has"."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    gpus: int | None = Field(None, ge=0)
    """GPUs per worker (null: all local GPUs when run locally, 0 on CPU machines)."""
    cpus: int | None = Field(None, ge=1)
    """CPU cores per worker (null: all local cores)."""
    memory: str | None = None
    """Memory per worker, e.g. ``32GiB`` (null: no explicit request)."""
    workers: int = Field(1, ge=1)
    """Workers (Ray actors / Slurm tasks) for stages that run distributed; 1 runs on one machine."""

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory(value)
        return value

    def memory_bytes(self) -> int | None:
        return parse_memory(self.memory) if self.memory else None


class StageConfig(BaseModel):
    """Base for stage configs. Attribute docstrings become field descriptions (shown by ``embedforge validate``).

    A field that does not change a stage's result (batch sizes, threads, progress) is declared with
    ``no_hash(default)`` and left out of the stage hash.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True,
                              frozen=False, protected_namespaces=())

    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, json_schema_extra=NO_HASH)
    """Cluster resources for this stage (``embedforge submit``); never changes results."""

    def input_fingerprint(self) -> Any:
        """Fingerprint of external inputs this stage reads (files), part of its hash; None when it reads none."""
        return None


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
