"""The stage registry: name, config model, upstream stages and the module that runs it, in run order.

Each stage module (``engine/stages/<name>.py``) has ``run(ctx: StageContext) -> None`` and reads top to bottom.
Register only stages that work. Importing this package stays light (configs only, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from embedforge.configs.base import StageConfig
from embedforge.configs.chunk import ChunkConfig
from embedforge.configs.embed import EmbedConfig
from embedforge.configs.evaluate import EvaluateConfig
from embedforge.configs.generate import GenerateConfig
from embedforge.configs.ingest import IngestConfig
from embedforge.configs.mine import MineConfig
from embedforge.configs.train import TrainConfig
from embedforge.configs.vocab import AnalyzeVocabConfig, ExtendVocabConfig, TrainTokenizerConfig


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
    StageInfo("ingest", IngestConfig, "embedforge.stages.ingest"),
    StageInfo("analyze_vocab", AnalyzeVocabConfig, "embedforge.stages.analyze_vocab", inputs=("ingest",),
              uses_base_model=True),
    StageInfo("train_tokenizer", TrainTokenizerConfig, "embedforge.stages.train_tokenizer", inputs=("ingest",),
              uses_base_model=True),
    StageInfo("extend_vocab", ExtendVocabConfig, "embedforge.stages.extend_vocab", inputs=("ingest", "analyze_vocab"),
              uses_base_model=True),
    StageInfo("chunk", ChunkConfig, "embedforge.stages.chunk", inputs=("ingest",), uses_base_model=True),
    StageInfo("generate", GenerateConfig, "embedforge.stages.generate", inputs=("chunk",), uses_base_model=True),
    StageInfo("mine", MineConfig, "embedforge.stages.mine", inputs=("chunk", "generate"), uses_base_model=True),
    StageInfo("train", TrainConfig, "embedforge.stages.train", inputs=("chunk", "generate", "mine", "extend_vocab"),
              uses_base_model=True),
    StageInfo("evaluate", EvaluateConfig, "embedforge.stages.evaluate", inputs=("chunk", "generate", "train"),
              uses_base_model=True),
    StageInfo("embed", EmbedConfig, "embedforge.stages.embed", inputs=("chunk", "train"), uses_base_model=True),
]


def stage_info(name: str) -> StageInfo:
    """The registered stage called ``name`` (error lists the known ones)."""
    for info in STAGES:
        if info.name == name:
            return info
    raise KeyError(f"unknown stage '{name}'; known stages: {', '.join(s.name for s in STAGES)}")
