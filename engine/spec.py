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
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embedforge.configs.base import StageConfig, hashed_fields
from embedforge.stages import STAGES, stage_info

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


class SpecError(ValueError):
    """A job spec problem, with the file, the field path, the bad value and what was expected."""


class JobSpec(BaseModel):
    """A whole job: which stages run, with which settings, where results go."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, protected_namespaces=())

    name: str = "job"
    """Job name; outputs go to ``<run_dir>/<name>/``. A slug: letters, digits, ``_ . -``, starting with a letter
    or digit (so never ``..`` or a hidden name), at most 128 characters."""
    run_dir: str = "runs"
    """Root directory for run outputs: a path, or an fsspec URL (``s3://…``, ``gs://…``, ``file://…``) whose stages
    run in a local scratch mirror and are pushed when finished (``engine/data/run_storage.py``)."""
    base_model: str = "all-MiniLM-L6-v2"
    """Embedding model the job starts from: a local model directory, a packaged name (all-MiniLM-L6-v2), or a
    Hugging Face id (``BAAI/bge-small-en-v1.5``) found in the local HF cache or downloaded when online."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``."""
    seed: int = Field(42, ge=0, lt=2**32)
    """Seed for every random choice in the job."""
    threads: int | None = Field(None, ge=1, le=4096)
    """torch CPU threads (null: torch's default)."""
    stages: dict[str, Any] = Field(default_factory=dict)
    """Stage name → that stage's settings; a stage runs when present here. Order is fixed by the registry."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SLUG.match(value):
            raise ValueError("a job name is a slug: letters, digits, '_', '.', '-', starting with a letter or digit, "
                             "at most 128 characters (it names the folder <run_dir>/<name>)")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        from embedforge.device import check_device_string

        return check_device_string(value)

    @field_validator("run_dir")
    @classmethod
    def _run_dir(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("run_dir must not be empty (a directory or an fsspec URL)")
        if "\x00" in value:
            raise ValueError("run_dir contains a NUL character")
        return value

    @field_validator("stages", mode="before")
    @classmethod
    def _validated_once(cls, value: Any) -> dict[str, StageConfig]:
        """Stage settings are validated once, by :func:`validate_dict` (its errors name the stage and field); they
        arrive here as the registry's config objects."""
        for name, config in (value or {}).items():
            if not isinstance(config, stage_info(name).config):
                raise ValueError(f"stages.{name}: build a JobSpec with validate_dict or load_spec")
        return value or {}

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
        if Path(job.base_model).expanduser().is_dir():  # a local model directory: its files, not just its name
            from embedforge.data.fingerprint import path_fingerprint

            factors["base_model_fingerprint"] = path_fingerprint(job.base_model)
    fingerprint = job.config(name).input_fingerprint()
    if fingerprint is not None:
        factors["input_fingerprint"] = fingerprint
    return stable_hash(factors, 12)


# ---------------------------------------------------------------- loading and overrides


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML's own rule; PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key (a list or mapping as key)
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark
                ) from None
            line = key_node.start_mark.line + 1
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (line {first} and line {line})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """YAML text → Python data, refusing duplicate keys (``yaml.YAMLError`` names the line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


MAX_NODES, MAX_DEPTH = 100_000, 64


def check_size(data: Any) -> None:
    """Refuse data with more than :data:`MAX_NODES` values once aliases are expanded (a "billion laughs" file
    is a few lines of YAML) or nested deeper than :data:`MAX_DEPTH`."""
    stack, seen = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES:,} values (YAML aliases expanded); a job spec is far smaller")
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_overrides(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """``["stages.chunk.max_tokens=256"]`` → ``[(["stages", "chunk", "max_tokens"], 256)]`` (values parsed as YAML)."""
    out: list[tuple[list[str], Any]] = []
    for item in items or []:
        if "=" not in item:
            raise SpecError(f"override '{item}': expected key.sub=value")
        key, _, raw = item.partition("=")
        if not key or any(not part for part in key.split(".")):
            raise SpecError(f"override '{item}': empty key part")
        try:
            value = parse_yaml(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise SpecError(f"override '{item}': the value is not valid YAML ({_one_line(exc)})") from None
        out.append((key.split("."), value))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Set each dotted key in ``data`` (creating mappings on the way); list items by index (``sources.0.path``).

    A bad path raises :class:`SpecError` naming the override and what was expected there.
    """
    for path, value in overrides:
        dotted = ".".join(path)
        node: Any = data
        for i, part in enumerate(path):
            here = ".".join(path[: i + 1])
            last = i == len(path) - 1
            if isinstance(node, list):
                if not part.lstrip("-").isdigit():
                    raise SpecError(f"override {dotted}: '{here}' must be a list index (0..{len(node) - 1}), "
                                    f"got '{part}'")
                index = int(part)
                if not 0 <= index < len(node) + (1 if last else 0):
                    raise SpecError(f"override {dotted}: index {index} is out of range; '{'.'.join(path[:i]) or '(top)'}'"
                                    f" has {len(node)} item(s) (use 0..{len(node) - 1}{', or the next index to append' if last else ''})")
                if last:
                    if index == len(node):
                        node.append(value)
                    else:
                        node[index] = value
                    break
                node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                    break
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                parent = ".".join(path[:i]) or "(top)"
                raise SpecError(f"override {dotted}: '{parent}' is a {type(node).__name__}, not a mapping or list, "
                                f"so it has no '{part}'")
    return data


def _one_line(exc: BaseException) -> str:
    """A YAML error as ``line L, column C: problem`` (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        context = getattr(exc, "context", None)
        return f"line {mark.line + 1}, column {mark.column + 1}: {f'{context}, ' if context else ''}{problem}"
    return " ".join(str(exc).split())


def _format_errors(source: str, err: ValidationError, prefix: tuple[Any, ...] = ()) -> str:
    lines = [f"{source}: invalid job spec ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = ".".join(str(p) for p in (*prefix, *e["loc"]))
        value = e.get("input")
        shown = json.dumps(value, default=str)[:80] if not isinstance(value, dict) else "{…}"
        message = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc or '(top level)'}: {message} (got {shown})")
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
    """Read, override and validate a job YAML file (UTF-8, a mapping, no duplicate keys, at least one stage)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: job spec not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (bad byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                        "save the job spec as UTF-8") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the job spec ({exc.strerror})") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise SpecError(f"{path}: not valid YAML: nested too deeply") from None
    if data is None or data == {}:
        raise SpecError(f"{path}: the job spec is empty; it needs at least 'stages:' with one stage")
    try:
        check_size(data)
    except ValueError as exc:
        raise SpecError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a job spec must be a YAML mapping, got {type(data).__name__}")
    data = apply_overrides(data, parse_overrides(overrides))
    spec = validate_dict(data, str(path))
    if not spec.stages:
        raise SpecError(f"{path}: stages: the job has no stages; add at least one (known stages: "
                        f"{', '.join(s.name for s in STAGES)})")
    return spec


def type_name(annotation: Any) -> str:
    """A field's type as a user reads it: ``bool``, ``list[SourceConfig]``, ``int | None``, ``'hf' | 'vllm'``."""
    import re
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(?:[a-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", str(annotation).replace("typing.", ""))


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _nested_models(a)]


def describe(model: type[BaseModel], indent: str = "") -> list[str]:
    """One line per field: name, type, default and description (for ``embedforge validate --explain``); the
    fields of nested settings (``sources``, ``backend_vllm``, …) follow, indented."""
    lines = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = ("(required)" if field.is_required() else "(below)" if isinstance(default, BaseModel)
                 else json.dumps(default, default=str))
        lines.append(f"{indent}{name}: {type_name(field.annotation)} = {shown}  # {' '.join((field.description or '').split())}")
        for nested in _nested_models(field.annotation):
            lines.extend(describe(nested, indent + "    "))
    return lines
