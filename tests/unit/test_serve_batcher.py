"""Dynamic batching with the real encoder: concurrent requests share model calls within a token budget."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedforge.serving.batcher import DynamicBatcher
from embedforge.serving.errors import APIError

TEXTS = [f"document number {i} about information retrieval" + " and indexing" * (i % 4) for i in range(8)]


def _run(coro):  # noqa: ANN001, ANN202
    return asyncio.run(coro)


def test_concurrent_requests_are_merged_and_answers_stay_in_order(encoder) -> None:
    calls: list[int] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return encoder.encode(texts)

    async def main() -> list[np.ndarray]:
        batcher = DynamicBatcher(encode, max_batch_tokens=10_000, max_wait_s=0.2)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit([t, t.upper()], tokens=20) for t in TEXTS))
        finally:
            await batcher.stop()

    results = _run(main())
    assert sum(calls) == 2 * len(TEXTS) and len(calls) < len(TEXTS), calls
    want = encoder.encode([x for t in TEXTS for x in (t, t.upper())])
    np.testing.assert_allclose(np.concatenate(results), want, atol=1e-4)


def test_token_budget_splits_batches(encoder) -> None:
    calls: list[int] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return encoder.encode(texts)

    async def main() -> None:
        batcher = DynamicBatcher(encode, max_batch_tokens=25, max_wait_s=0.2)
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.submit([t], tokens=10) for t in TEXTS[:6]))
        finally:
            await batcher.stop()

    _run(main())
    assert sum(calls) == 6 and max(calls) <= 2, calls  # 10 + 10 fits in 25 tokens, a third does not


def test_model_failure_reaches_every_request_of_the_batch() -> None:
    def encode(texts: list[str]) -> np.ndarray:
        raise RuntimeError("CUDA out of memory")

    async def main() -> list[object]:
        batcher = DynamicBatcher(encode, max_wait_s=0.05)
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(["x"], tokens=3) for _ in range(3)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    results = _run(main())
    assert all(
        isinstance(r, APIError) and r.status == 500 and "CUDA out of memory" in r.message for r in results
    )


def test_full_queue_answers_503_and_stop_fails_waiting_requests(encoder) -> None:
    async def main() -> None:
        batcher = DynamicBatcher(encoder.encode, max_queue=2, max_wait_s=0.0)
        with pytest.raises(APIError, match="not running"):
            await batcher.submit(["x"], tokens=3)
        await batcher.start()
        batcher._task.cancel()  # freeze the consumer so requests pile up
        await asyncio.sleep(0)
        batcher._task = asyncio.create_task(asyncio.sleep(3600))
        waiting = [asyncio.create_task(batcher.submit(["x"], tokens=3)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(APIError, match="overloaded") as info:
            await batcher.submit(["x"], tokens=3)
        assert info.value.status == 503
        await batcher.stop()
        for task in waiting:
            with pytest.raises(APIError, match="shutting down"):
                await task

    _run(main())
