"""Checks a job can run, done before its first stage: every path and model reference it can resolve cheaply.

``embedforge validate`` and ``embedforge run`` (before any stage starts) call :func:`preflight`. It finds, in
seconds, what would otherwise fail minutes or hours later, after earlier stages ran: a missing ingest source or
evaluate dataset, an unknown model, Matryoshka ``dims`` beyond the model's dimension, an unsafe folder glob.
Models are resolved without loading weights; their dimension comes from their config files.

>>> preflight(load_spec("jobs/quickstart.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedforge.spec import JobSpec, SpecError


@dataclass
class _Problems:
    source: str
    lines: list[str] = field(default_factory=list)
    dims: dict[str, int | None] = field(default_factory=dict)
    """Resolved model reference → its embedding dimension (None: not a sentence-transformers directory)."""

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"  {where}: {message}")


def model_dimension(path: Path) -> int | None:
    """Output dimension of a sentence-transformers directory from its config files (no weights loaded): the
    last Dense layer's ``out_features``, else the pooling ``word_embedding_dimension``, else ``hidden_size``."""
    if not path.is_dir():
        return None
    modules = _read_json(path / "modules.json")
    dim = None
    for module in modules if isinstance(modules, list) else []:
        config = _read_json(path / str(module.get("path", "")) / "config.json")
        kind = str(module.get("type", ""))
        if kind.endswith("Dense") and isinstance(config, dict):
            dim = config.get("out_features", dim)
        elif kind.endswith("Pooling") and isinstance(config, dict) and dim is None:
            dim = config.get("word_embedding_dimension")
    if dim is None:
        config = _read_json(path / "config.json")
        if isinstance(config, dict):
            dim = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    return dim if isinstance(dim, int) and dim > 0 else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _model(job: JobSpec, ref: str, where: str, problems: _Problems) -> int | None:
    """Resolve a model reference as a stage would; returns its dimension (None when unknown or unresolved)."""
    from embedforge.models import resolve_model

    if ref == "train":
        if "train" not in job.stages:
            problems.add(where, "'train' names this job's trained model, but the job has no train stage")
            return None
        return _model(job, job.config("train").model, "stages.train.model", problems)
    if ref == "base":
        ref = job.base_model
    if ref in problems.dims:
        return problems.dims[ref]
    try:
        path = resolve_model(ref)
    except Exception as exc:  # noqa: BLE001 - any failure to resolve (hub, permissions, ...) is reported, not raised
        problems.add(where, " ".join(str(exc).split()) or type(exc).__name__)
        problems.dims[ref] = None
        return None
    if path.is_dir() and not any((path / name).is_file() for name in ("config.json", "modules.json")):
        problems.add(where, f"'{ref}' ({path}) is not a model directory (no config.json)")
    problems.dims[ref] = model_dimension(path)
    return problems.dims[ref]


def _dims_fit(dims: list[int], dim: int | None, model: str, where: str, problems: _Problems) -> None:
    too_big = [d for d in dims if dim is not None and d > dim]
    if too_big:
        problems.add(where, f"{too_big} beyond the dimension of model '{model}' ({dim})")


def _check_ingest(job: JobSpec, problems: _Problems) -> None:
    from embedforge.data.ingest import check_source

    for i, src in enumerate(job.config("ingest").sources):
        try:
            check_source(src)
        except (FileNotFoundError, ValueError, OSError) as exc:
            problems.add(f"stages.ingest.sources.{i}.path", str(exc))


def _check_evaluate(job: JobSpec, problems: _Problems) -> None:
    from embedforge.data.ingest import resolve_path

    cfg = job.config("evaluate")
    for i, dataset in enumerate(cfg.datasets):
        try:
            root = resolve_path(dataset)
        except (FileNotFoundError, ValueError) as exc:
            problems.add(f"stages.evaluate.datasets.{i}", str(exc))
            continue
        missing = [n for n in ("corpus.jsonl", "queries.jsonl", f"qrels/{cfg.split}.tsv") if not (root / n).is_file()]
        if not root.is_dir():
            problems.add(f"stages.evaluate.datasets.{i}", f"'{dataset}' is not a directory (BEIR layout expected)")
        elif missing:
            problems.add(f"stages.evaluate.datasets.{i}", f"'{dataset}' lacks {', '.join(missing)} (BEIR layout: "
                         f"corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    for i, ref in enumerate(cfg.models):
        label, sep, target = ref.partition("=")
        target = target if sep and label and "/" not in label else ref
        if target.lower() == "bm25" or (target == "train" and "train" not in job.stages):
            continue  # evaluate skips 'train' without a train stage (and says so in its report)
        dim = _model(job, target, f"stages.evaluate.models.{i}", problems)
        _dims_fit(cfg.dims, dim, job.base_model if target == "base" else target, "stages.evaluate.dims", problems)


def _check_embed(job: JobSpec, problems: _Problems) -> None:
    from embedforge.data.ingest import resolve_path

    cfg = job.config("embed")
    ref = cfg.model if cfg.model != "auto" else ("train" if "train" in job.stages else "base")
    dim = _model(job, ref, "stages.embed.model", problems)
    _dims_fit(cfg.dims, dim, ref if ref not in ("base", "train") else job.base_model, "stages.embed.dims", problems)
    if cfg.input != "chunk":
        try:
            exists = resolve_path(cfg.input).exists()
        except (FileNotFoundError, ValueError):
            exists = False
        if not exists:
            problems.add("stages.embed.input", f"'{cfg.input}' not found (a path, or 'chunk' for this job's chunks)")
    elif "chunk" not in job.stages:
        problems.add("stages.embed.input", "'chunk' reads this job's chunks, but the job has no chunk stage")


def _check_judged(job: JobSpec, problems: _Problems) -> None:
    """The train stage's judged queries exist and are readable, those it trains on (``judged_train_split``) are none
    of those that validate, and neither are among the queries the evaluate stage measures."""
    from embedforge.data.beir import BeirFormatError, load_qrels
    from embedforge.data.ingest import resolve_path

    cfg = job.config("train")
    try:
        root = resolve_path(cfg.judged_queries or "")
    except (FileNotFoundError, ValueError) as exc:
        problems.add("stages.train.judged_queries", str(exc))
        return
    splits = {"judged_split": cfg.judged_split}
    if cfg.judged_train_split:
        splits["judged_train_split"] = cfg.judged_train_split
    missing = [n for n in ("queries.jsonl", *(f"qrels/{s}.tsv" for s in splits.values())) if not (root / n).is_file()]
    if missing:
        problems.add("stages.train.judged_queries", f"'{cfg.judged_queries}' lacks {', '.join(missing)} "
                     f"({', '.join(f'{k} {v!r} reads qrels/{v}.tsv' for k, v in splits.items())})")
        return
    try:
        ids = {split: set(load_qrels(root / "qrels" / f"{split}.tsv")) for split in splits.values()}
    except BeirFormatError as exc:
        problems.add("stages.train.judged_queries", str(exc))
        return
    trained_ids = ids[cfg.judged_train_split] if cfg.judged_train_split else set()
    if both := ids[cfg.judged_split] & trained_ids:
        problems.add("stages.train.judged_train_split", f"{len(both)} queries of qrels/{cfg.judged_train_split}"
                     f".tsv (trained on) also choose the checkpoint (qrels/{cfg.judged_split}.tsv): divide them "
                     f"with embedforge datasets split")
    if "evaluate" not in job.stages:
        return
    ev = job.config("evaluate")
    for dataset in ev.datasets:
        try:
            other = resolve_path(dataset)
        except (FileNotFoundError, ValueError):
            continue  # reported by _check_evaluate
        measured = other / "qrels" / f"{ev.split}.tsv"
        try:
            same = other.resolve() == root.resolve() and measured.is_file()
        except (OSError, ValueError):  # an unusable path: _check_evaluate names it
            continue
        if not same:
            continue
        try:
            measured_ids = set(load_qrels(measured))
        except BeirFormatError as exc:
            problems.add("stages.train.judged_queries", str(exc))
            continue
        shared, trained = ids[cfg.judged_split] & measured_ids, trained_ids & measured_ids
        if trained:
            problems.add("stages.train.judged_train_split", f"{len(trained)} of the queries that evaluate measures "
                         f"on '{dataset}' (qrels/{ev.split}.tsv) would also be trained on "
                         f"(qrels/{cfg.judged_train_split}.tsv): the evaluation would measure memorised answers")
        if shared:
            problems.add("stages.train.judged_split", f"{len(shared)} of the queries that evaluate measures on "
                         f"'{dataset}' (qrels/{ev.split}.tsv) would also choose the checkpoint "
                         f"(qrels/{cfg.judged_split}.tsv), and the evaluation would flatter the tuned model; divide "
                         f"them: embedforge datasets split {dataset} --split {ev.split}, then judged_split: "
                         f"{ev.split}-dev and evaluate.split: {ev.split}-heldout")


def _check_model_fields(job: JobSpec, problems: _Problems) -> None:
    """Single model references of the other stages (``model: base`` and the like)."""
    for stage, attr in (("chunk", "tokenizer"), ("mine", "model"), ("train", "model"), ("extend_vocab", "model"),
                        ("generate", "roundtrip_model"), ("mine", "cross_encoder"), ("train", "teacher_model")):
        if stage in job.stages:
            ref = getattr(job.config(stage), attr)
            if ref is not None and ref != "train":
                _model(job, ref, f"stages.{stage}.{attr}", problems)
    if "mine" in job.stages and (queries := job.config("mine").queries_path):
        if not Path(queries).expanduser().exists():
            problems.add("stages.mine.queries_path", f"'{queries}' not found")
    if "analyze_vocab" in job.stages:
        for i, ref in enumerate(job.config("analyze_vocab").tokenizers):
            if not ref.endswith(".json") or not Path(ref).expanduser().is_file():
                _model(job, ref, f"stages.analyze_vocab.tokenizers.{i}", problems)


def preflight(job: JobSpec, source: str = "<spec>") -> None:
    """Raise :class:`SpecError` listing every problem found (file, field, value, what was expected)."""
    problems = _Problems(source)
    if any(s.uses_base_model for s in _stage_infos(job)):
        _model(job, "base", "base_model", problems)
    if "ingest" in job.stages:
        _check_ingest(job, problems)
    if "evaluate" in job.stages:
        _check_evaluate(job, problems)
    if "embed" in job.stages:
        _check_embed(job, problems)
    if "train" in job.stages and job.config("train").judged_queries:
        _check_judged(job, problems)
    _check_model_fields(job, problems)
    if problems.lines:
        n = len(problems.lines)
        raise SpecError("\n".join([f"{source}: the job cannot run ({n} problem{'s' if n > 1 else ''})",
                                   *dict.fromkeys(problems.lines)]))


def _stage_infos(job: JobSpec) -> list[Any]:
    from embedforge.stages import stage_info

    return [stage_info(name) for name in job.stage_names()]
