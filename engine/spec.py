"""Job specs: YAML → validated typed models, ``key.sub=value`` overrides, and the hashes that name outputs.

A job file looks like::

    # embedforge run jobs/quickstart.yaml
    name: quickstart
    base_model: all-MiniLM-L6-v2
    stages:
      ingest: {sources: [{path: builtin:adi}]}
      chunk: {max_tokens: 256}

Stages run in registry order; a stage runs when its key is present under ``stages``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embedforge.configs.base import StageConfig, hashed_fields
from embedforge.stages import STAGES, stage_info


class SpecError(ValueError):
    """A job spec problem, with the file, the field path, the bad value and what was expected."""


class JobSpec(BaseModel):
    """A whole job: which stages run, with which settings, where results go."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, protected_namespaces=())

    name: str = Field("job", pattern=r"^[A-Za-z0-9_.-]+$")
    """Job name; outputs go to ``<run_dir>/<name>/``."""
    run_dir: str = "runs"
    """Root directory for run outputs: a path, or an fsspec URL (``s3://…``, ``gs://…``, ``file://…``) whose stages
    run in a local scratch mirror and are pushed when finished (``engine/data/run_storage.py``)."""
    base_model: str = "all-MiniLM-L6-v2"
    """Embedding model the job starts from: a packaged name (all-MiniLM-L6-v2) or a local model directory."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``."""
    seed: int = 42
    """Seed for every random choice in the job."""
    threads: int | None = None
    """torch CPU threads (null: torch's default)."""
    stages: dict[str, Any] = Field(default_factory=dict)
    """Stage name → that stage's settings; a stage runs when present here. Order is fixed by the registry."""

    @field_validator("stages", mode="before")
    @classmethod
    def _validate_stages(cls, value: Any) -> dict[str, StageConfig]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("expected a mapping of stage name → settings")
        out: dict[str, StageConfig] = {}
        for name, raw in value.items():
            info = stage_info(name) if name in {s.name for s in STAGES} else None
            if info is None:
                raise ValueError(f"unknown stage '{name}'; known stages: {', '.join(s.name for s in STAGES)}")
            out[name] = raw if isinstance(raw, StageConfig) else info.config.model_validate(raw or {})
        return out

    def stage_names(self) -> list[str]:
        """Stages of this job in run order."""
        return [s.name for s in STAGES if s.name in self.stages]

    def config(self, name: str) -> StageConfig:
        """The config of stage ``name`` (registry default when the job does not list it)."""
        if name in self.stages:
            return self.stages[name]
        return stage_info(name).config()

    def spec_hash(self) -> str:
        """Hash of the whole validated spec (for the manifest)."""
        dump = self.model_dump(mode="json")
        dump["stages"] = {k: v.model_dump(mode="json") for k, v in self.stages.items()}
        return stable_hash(dump)


def stable_hash(obj: Any, length: int = 64) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def stage_hash(job: JobSpec, name: str, input_hashes: dict[str, str]) -> str:
    """12-hex hash over the fields of stage ``name`` that change its result, and its inputs' hashes."""
    info = stage_info(name)
    factors: dict[str, Any] = {"stage": name, "version": info.version, "config": hashed_fields(job.config(name)),
                               "inputs": dict(sorted(input_hashes.items())), "seed": job.seed}
    if info.uses_base_model:
        factors["base_model"] = job.base_model
    fingerprint = job.config(name).input_fingerprint()
    if fingerprint is not None:
        factors["input_fingerprint"] = fingerprint
    return stable_hash(factors, 12)


# ---------------------------------------------------------------- loading and overrides


def parse_overrides(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """``["stages.chunk.max_tokens=256"]`` → ``[(["stages", "chunk", "max_tokens"], 256)]`` (values parsed as YAML)."""
    out: list[tuple[list[str], Any]] = []
    for item in items or []:
        if "=" not in item:
            raise SpecError(f"override '{item}': expected key.sub=value")
        key, _, raw = item.partition("=")
        if not key or any(not part for part in key.split(".")):
            raise SpecError(f"override '{item}': empty key part")
        out.append((key.split("."), yaml.safe_load(raw) if raw != "" else ""))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Set each dotted key in ``data`` (creating mappings on the way); list items by index (``sources.0.path``)."""
    for path, value in overrides:
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                node = node[int(part)]
                continue
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, (dict, list)):
                raise SpecError(f"override {'.'.join(path)}: '{'.'.join(path[: i + 1])}' is not a mapping")
        if isinstance(node, list):
            node[int(path[-1])] = value
        else:
            node[path[-1]] = value
    return data


def _format_errors(source: str, err: ValidationError, prefix: tuple[Any, ...] = ()) -> str:
    lines = [f"{source}: invalid job spec ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = ".".join(str(p) for p in (*prefix, *e["loc"]))
        value = e.get("input")
        shown = json.dumps(value, default=str)[:80] if not isinstance(value, dict) else "{…}"
        lines.append(f"  {loc or '(top level)'}: {e['msg']} (got {shown})")
    return "\n".join(lines)


def validate_dict(data: dict[str, Any], source: str = "<spec>") -> JobSpec:
    """Validate a raw mapping into a :class:`JobSpec`; errors name the source, field path, value and expectation."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a job spec must be a YAML mapping, got {type(data).__name__}")
    stages = data.get("stages") or {}
    if not isinstance(stages, dict):
        raise SpecError(f"{source}: stages: expected a mapping of stage name → settings (got {type(stages).__name__})")
    known = {s.name for s in STAGES}
    checked: dict[str, StageConfig] = {}
    for name, raw in stages.items():
        if name not in known:
            raise SpecError(f"{source}: stages.{name}: unknown stage; known stages: {', '.join(sorted(known))}")
        if raw is not None and not isinstance(raw, dict):
            raise SpecError(f"{source}: stages.{name}: expected a mapping of settings, got {json.dumps(raw)[:60]}")
        try:
            checked[name] = stage_info(name).config.model_validate(raw or {})
        except ValidationError as err:
            raise SpecError(_format_errors(source, err, ("stages", name))) from None
    try:
        return JobSpec.model_validate({**data, "stages": checked})
    except ValidationError as err:
        raise SpecError(_format_errors(source, err)) from None


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, override and validate a job YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: job spec not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a job spec must be a YAML mapping, got {type(data).__name__}")
    try:
        data = apply_overrides(data, parse_overrides(overrides))
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise SpecError(f"{path}: bad override: {exc}") from None
    return validate_dict(data, str(path))


def describe(model: type[BaseModel], indent: str = "") -> list[str]:
    """One line per field: name, type, default and description (for ``embedforge validate --explain``)."""
    lines = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        lines.append(f"{indent}{name}: {field.annotation!s} = {default!r}  # {field.description or ''}".replace("typing.", ""))
    return lines
