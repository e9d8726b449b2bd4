"""The stage registry: name, config model, upstream stages and the module that runs it, in run order.

Each stage module (``engine/stages/<name>.py``) has ``run(ctx: StageContext) -> None`` and reads top to bottom.
Register only stages that work. Importing this package stays light (configs only, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.configs.base import StageConfig
from engine.configs.chunk import ChunkConfig
from engine.configs.embed import EmbedConfig
from engine.configs.evaluate import EvaluateConfig
from engine.configs.generate import GenerateConfig
from engine.configs.ingest import IngestConfig
from engine.configs.mine import MineConfig
from engine.configs.train import TrainConfig
from engine.configs.vocab import AnalyzeVocabConfig, ExtendVocabConfig, TrainTokenizerConfig


@dataclass(frozen=True)
class StageInfo:
    """What the runner needs to know of a stage."""

    name: str
    config: type[StageConfig]
    module: str
    """Module with ``run(ctx)``."""
    inputs: tuple[str, ...] = ()
    """Upstream stages whose outputs this stage reads when they are in the job (absent ones are skipped)."""
    uses_base_model: bool = False
    """The job's ``base_model`` changes this stage's result (so it is part of the hash)."""
    version: int = 1
    """Bump when the stage's output changes for the same config (invalidates old runs)."""


STAGES: list[StageInfo] = [
    StageInfo("ingest", IngestConfig, "engine.stages.ingest"),
    StageInfo("analyze_vocab", AnalyzeVocabConfig, "engine.stages.analyze_vocab", inputs=("ingest",),
              uses_base_model=True),
    StageInfo("train_tokenizer", TrainTokenizerConfig, "engine.stages.train_tokenizer", inputs=("ingest",),
              uses_base_model=True),
    StageInfo("extend_vocab", ExtendVocabConfig, "engine.stages.extend_vocab", inputs=("ingest", "analyze_vocab"),
              uses_base_model=True),
    StageInfo("chunk", ChunkConfig, "engine.stages.chunk", inputs=("ingest",), uses_base_model=True),
    StageInfo("generate", GenerateConfig, "engine.stages.generate", inputs=("chunk",), uses_base_model=True),
    StageInfo("mine", MineConfig, "engine.stages.mine", inputs=("chunk", "generate"), uses_base_model=True),
    StageInfo("train", TrainConfig, "engine.stages.train", inputs=("chunk", "generate", "mine", "extend_vocab"),
              uses_base_model=True),
    StageInfo("evaluate", EvaluateConfig, "engine.stages.evaluate", inputs=("chunk", "generate", "train"),
              uses_base_model=True),
    StageInfo("embed", EmbedConfig, "engine.stages.embed", inputs=("chunk", "train"), uses_base_model=True),
]


def stage_info(name: str) -> StageInfo:
    """The registered stage called ``name`` (error lists the known ones)."""
    for info in STAGES:
        if info.name == name:
            return info
    raise KeyError(f"unknown stage '{name}'; known stages: {', '.join(s.name for s in STAGES)}")
