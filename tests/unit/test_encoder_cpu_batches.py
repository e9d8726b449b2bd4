"""On CPU the encoder cuts batches at ``cpu_batch_tokens`` (cache-sized), whatever budget the caller passes."""

from __future__ import annotations

import numpy as np
import torch

from embedforge.encoding.encoder import CPU_BATCH_TOKENS_PER_THREAD, Encoder, token_budget_batches

TEXTS = [f"passage {i} about heat transfer " + "and boundary layers " * (i % 9) for i in range(40)]


def test_cpu_batches_are_capped_and_vectors_do_not_change(minilm_path) -> None:
    small = Encoder(minilm_path, device="cpu", backend="torch", cpu_batch_tokens=64)
    large = Encoder(minilm_path, device="cpu", backend="torch", cpu_batch_tokens=1 << 20)
    assert Encoder(minilm_path, device="cpu", backend="torch").cpu_batch_tokens == \
        CPU_BATCH_TOKENS_PER_THREAD * torch.get_num_threads()
    lengths = [len(ids) for ids in small._tokenize(TEXTS)]
    a = small.encode(TEXTS, max_batch_tokens=16384)  # the caller's budget is larger: the cap wins
    b = large.encode(TEXTS, max_batch_tokens=16384)
    assert small.stats["batches"] == len(token_budget_batches(lengths, 64)) > large.stats["batches"]
    assert large.stats["batches"] == len(token_budget_batches(lengths, 16384))
    assert small.stats["tokens"] == large.stats["tokens"] == sum(lengths)
    np.testing.assert_allclose(a, b, atol=2e-5)
    small.encode(TEXTS, max_batch_tokens=32)  # a smaller budget than the cap is kept
    assert small.stats["batches"] - len(token_budget_batches(lengths, 64)) == len(token_budget_batches(lengths, 32))
