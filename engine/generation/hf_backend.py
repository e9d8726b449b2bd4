"""transformers ``generate`` backend: chat template, prompts sorted by length, batched with left padding.

For CPUs without vLLM and as the baseline of ``benchmarks/bench_generate.py``.

>>> hf = HFBackend(str(resolve_model("smollm2")))                                      # doctest: +SKIP
>>> hf.generate([[{"role": "user", "content": "Hi"}]], Sampling(max_tokens=8), seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os

import torch

from embedforge import device as dev
from embedforge.generation.backends import Completion, Messages, Sampling
from embedforge.models import model_id

log = logging.getLogger("embedforge.generate.hf")


class HFBackend:
    """A causal LM and its tokenizer loaded from a local HF directory."""

    name = "hf"

    def __init__(self, model_dir: str, *, device: str = "auto", dtype: str = "fp32", batch_size: int = 16) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = dev.device(device)
        self.dtype = dev.compute_dtype(self.device, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.dtype).to(self.device).eval()
        self.batch_size = batch_size
        self.generator_id = f"hf:{os.path.basename(model_dir.rstrip('/'))}@{model_id(model_dir)}"

    def prompt_texts(self, prompts: list[Messages]) -> list[str]:
        """Prompts rendered with the model's chat template (generation prompt added)."""
        return [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]

    @torch.inference_mode()
    def generate(self, prompts: list[Messages], sampling: Sampling, seed: int) -> list[Completion]:
        """Completions in input order; batches of ``batch_size`` prompts of similar length; seeded per call."""
        texts = self.prompt_texts(prompts)
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out: list[Completion | None] = [None] * len(texts)
        generator_seed = torch.Generator().manual_seed(seed)
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
            sample = sampling.temperature > 0
            ids = self.model.generate(
                **enc, max_new_tokens=sampling.max_tokens, do_sample=sample, num_return_sequences=sampling.n,
                temperature=sampling.temperature if sample else None, top_p=sampling.top_p if sample else None,
                top_k=None, pad_token_id=self.tokenizer.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1]:].cpu().tolist()
            for j, i in enumerate(batch):
                rows = new[j * sampling.n:(j + 1) * sampling.n]
                kept = [_until_eos(r, eos) for r in rows]
                out[i] = Completion(texts=self.tokenizer.batch_decode(kept, skip_special_tokens=True),
                                    prompt_tokens=lengths[i], output_tokens=sum(len(r) for r in kept))
        return [c for c in out if c is not None]

    def close(self) -> None:
        del self.model


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i]
    return tokens
