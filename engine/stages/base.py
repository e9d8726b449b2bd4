"""What a stage's ``run`` gets and raises: :class:`StageContext`, :class:`StageOutput`, :class:`StageFailed`.

Stages import these from here, not from the runner, so the runner → stage import goes one way only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedforge.data import run_storage
from embedforge.data.shards import ShardWriter

if TYPE_CHECKING:
    from embedforge.spec import JobSpec
    from embedforge.stages import StageInfo

SUCCESS = run_storage.SUCCESS
MANIFEST = run_storage.MANIFEST


class StageFailed(RuntimeError):
    """A stage stopped with a clear reason (too much bad input, missing input, ...)."""


@dataclass
class StageOutput:
    """A finished (or planned) stage output."""

    name: str
    hash: str
    dir: Path
    """Where the stage reads and writes its files (local scratch when ``url`` is set)."""
    url: str | None = None
    """The stage directory on shared storage when the job's ``run_dir`` is an fsspec URL."""

    @property
    def location(self) -> str:
        return self.url or str(self.dir)

    @property
    def done(self) -> bool:
        if self.url:
            return run_storage.exists(run_storage.join(self.url, SUCCESS))
        return (self.dir / SUCCESS).is_file()

    def manifest(self) -> dict[str, Any]:
        if self.url:
            return run_storage.read_json(run_storage.join(self.url, MANIFEST))
        path = self.dir / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else {}

    def fetch(self) -> None:
        """Make a finished stage's files available in ``dir`` (pulled from the storage once per machine)."""
        if self.url and not (self.dir / SUCCESS).is_file():
            run_storage.pull(self.url, self.dir)


@dataclass
class StageContext:
    """Everything a stage's ``run`` gets: its config, where to write, and its inputs' outputs."""

    job: JobSpec
    info: StageInfo
    config: Any
    out_dir: Path
    inputs: dict[str, StageOutput]
    counts: dict[str, float] = field(default_factory=dict)
    """Stage counters that go to the manifest (added to the per-shard totals)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else for the manifest (statistics, decisions, throughput)."""
    throughput: dict[str, float] = field(default_factory=dict)
    """Rates for the manifest (rows/s, tokens/s, ...)."""

    @property
    def name(self) -> str:
        return self.info.name

    def input_dir(self, name: str) -> Path:
        """Output directory of upstream stage ``name`` (error when the job does not have it)."""
        if name not in self.inputs:
            raise StageFailed(f"stage '{self.name}' needs the output of stage '{name}', which this job does not run")
        return self.inputs[name].dir

    def has_input(self, name: str) -> bool:
        return name in self.inputs

    def writer(self) -> ShardWriter:
        """The resumable shard writer of this stage's output directory."""
        return ShardWriter(self.out_dir)

    def count(self, key: str, n: float = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def resolve_model(self, ref: str) -> str:
        """A model reference → local directory: ``base`` is the job's base model; ``train`` is this job's trained
        model (when the job has a train stage); otherwise a packaged name or a path."""
        from embedforge.models import resolve_model

        if ref == "base":
            ref = self.job.base_model
        elif ref in self.inputs and (self.inputs[ref].dir / "model").is_dir():
            return str(self.inputs[ref].dir / "model")
        return str(resolve_model(ref))
