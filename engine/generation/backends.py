"""What every LLM backend gives the stage: chat prompts in, completions with token counts out.

Backends (``vllm``, ``hf``, ``openai``) live in their own modules and are imported only when chosen, so the
stage never imports vLLM unless the job asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from embedforge.progress import per_second

if TYPE_CHECKING:
    from embedforge.configs.generate import GenerateConfig

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one generation call."""

    n: int = 1
    """Completions per prompt."""
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 96

    def as_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


@dataclass
class Completion:
    """The ``n`` completions of one prompt and its token counts (prompt once, outputs summed)."""

    texts: list[str]
    prompt_tokens: int
    output_tokens: int
    error: str | None = None
    """Set when the request for this prompt failed for good (the prompt is quarantined)."""


@dataclass
class Usage:
    """Running totals of a backend (for the manifest's throughput)."""

    prompts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, completions: list[Completion], seconds: float) -> None:
        self.prompts += len(completions)
        self.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.output_tokens += sum(c.output_tokens for c in completions)
        self.seconds += seconds

    def rates(self) -> dict[str, float]:
        """The manifest's throughput, per second of LLM time (the stage's log line shows ``output_tokens_per_s``
        from here, so both print one figure)."""
        s = self.seconds
        return {"prompts_per_s": per_second(self.prompts, s, 3), "input_tokens_per_s": per_second(self.prompt_tokens, s),
                "output_tokens_per_s": per_second(self.output_tokens, s),
                "total_tokens_per_s": per_second(self.prompt_tokens + self.output_tokens, s),
                "llm_seconds": round(self.seconds, 3)}


class LLMBackend(Protocol):
    """A chat LLM that completes many prompts in one call."""

    name: str
    generator_id: str
    """Model name and content hash, recorded in each row's ``generator`` column."""

    def generate(self, prompts: list[Messages], sampling: Sampling, seed: int) -> list[Completion]: ...

    def close(self) -> None: ...


def open_backend(cfg: GenerateConfig, model_dir: str | None, seed: int) -> LLMBackend:
    """The backend ``cfg.backend`` for model ``model_dir`` (a local directory; the server's model for openai)."""
    if cfg.backend == "vllm":
        from embedforge.generation.vllm_backend import VLLMBackend

        v = cfg.backend_vllm
        return VLLMBackend(str(model_dir), seed=seed, dtype=v.dtype, max_model_len=v.max_model_len,
                           enforce_eager=v.enforce_eager, tensor_parallel_size=v.tensor_parallel_size,
                           data_parallel_size=v.data_parallel_size,
                           gpu_memory_utilization=v.gpu_memory_utilization, kv_cache_gb=v.kv_cache_gb)
    if cfg.backend == "hf":
        from embedforge.generation.hf_backend import HFBackend

        return HFBackend(str(model_dir), dtype=cfg.backend_hf.dtype, batch_size=cfg.backend_hf.batch_size)
    from embedforge.generation.openai_backend import OpenAIBackend

    o = cfg.backend_openai
    return OpenAIBackend(o.base_url, o.model or cfg.model, api_key_env=o.api_key_env, concurrency=o.concurrency,
                         timeout_s=o.timeout_s, max_retries=o.max_retries, backoff_s=o.backoff_s)
