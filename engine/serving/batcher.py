"""Dynamic batching: concurrent requests are merged into one model call by a token budget.

One asyncio task consumes a queue of pending requests. It takes the oldest, then keeps adding requests while
their tokens fit in ``max_batch_tokens``, waiting at most ``max_wait`` (counted from the oldest request's
arrival) for more to come. The merged texts are encoded on a single model thread, so the event loop never
blocks on the model and the model (and its tokenizer, which is not thread-safe) is used by one thread only.

>>> batcher = DynamicBatcher(encoder.encode, max_batch_tokens=16384, max_wait_s=0.005)
>>> await batcher.start(); vectors = await batcher.submit(["a text"], tokens=3)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from embedforge.serving.errors import APIError
from embedforge.serving.metrics import ServeMetrics

log = logging.getLogger("embedforge.serve")
T = TypeVar("T")


@dataclass
class _Pending:
    texts: list[str]
    tokens: int
    future: asyncio.Future[np.ndarray]
    arrived: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Merges concurrent :meth:`submit` calls into calls of ``encode(texts) -> (n, dim) float32``."""

    def __init__(
        self,
        encode: Callable[[list[str]], np.ndarray],
        *,
        max_batch_tokens: int = 16384,
        max_wait_s: float = 0.005,
        max_queue: int = 1024,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.encode = encode
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.metrics = metrics
        self.batches_run = 0
        """Model calls made so far (tests and /health read it)."""
        self.model_busy = False
        """True while a batch is being encoded on the model thread."""
        self.in_flight = 0
        """Requests submitted and not answered yet."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedforge-model")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._held: list[_Pending] = []

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="embedforge-batcher")

    async def stop(self) -> None:
        """Stop taking work, fail what is still queued with 503, and let the model thread finish."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            self._held.append(self._queue.get_nowait())
        for pending in self._held:
            if not pending.future.done():
                pending.future.set_exception(APIError(503, "server is shutting down", code="shutting_down"))
        self._executor.shutdown(wait=True)

    async def on_model_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model thread (e.g. token counting with the model's tokenizer)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def submit(self, texts: Sequence[str], tokens: int) -> np.ndarray:
        """Embeddings of ``texts`` (rows in order), computed in a batch shared with concurrent requests."""
        if self._queue is None or not self.alive:
            raise APIError(503, "the model worker is not running", code="not_ready")
        if self._queue.qsize() >= self.max_queue:
            raise APIError(
                503,
                f"server overloaded: {self.max_queue} requests already waiting; retry later",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(list(texts), max(tokens, 1), future))
        self._gauge()
        self.in_flight += 1
        try:
            return await future
        finally:
            self.in_flight -= 1

    def _gauge(self) -> None:
        if self.metrics is not None and self._queue is not None:
            self.metrics.queue_depth.set(self._queue.qsize())

    async def _collect(self, first: _Pending) -> tuple[list[_Pending], _Pending | None]:
        """``first`` plus the queued requests that fit in the token budget, and the one that did not fit."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch, tokens = [first], first.tokens
        self._held = batch  # the same list: whatever is taken from the queue is failed by stop() if cancelled
        deadline = loop.time() + max(0.0, self.max_wait_s - (time.perf_counter() - first.arrived))
        while tokens < self.max_batch_tokens:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if tokens + item.tokens > self.max_batch_tokens:
                self._held = [*batch, item]
                return batch, item
            batch.append(item)
            tokens += item.tokens
        return batch, None

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        carry: _Pending | None = None
        while True:
            first = carry or await self._queue.get()
            batch, carry = await self._collect(first)
            self._gauge()
            batch = [p for p in batch if not p.future.done()]  # clients that went away
            if not batch:
                continue
            texts = [t for p in batch for t in p.texts]
            started = time.perf_counter()
            self.model_busy = True
            try:
                vectors = await loop.run_in_executor(self._executor, self.encode, texts)
            except Exception as exc:  # the model failed: every request of the batch gets the error
                log.exception("model batch of %d texts failed", len(texts))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(
                            APIError(500, f"the model failed on this batch ({exc})", code="model_error")
                        )
                continue
            finally:
                self.model_busy = False
            self.batches_run += 1
            self._observe(batch, len(texts), started)
            offset = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(vectors[offset : offset + len(p.texts)])
                offset += len(p.texts)

    def _observe(self, batch: list[_Pending], n_texts: int, started: float) -> None:
        if self.metrics is None:
            return
        self.metrics.model_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_inputs.observe(n_texts)
        self.metrics.batch_requests.observe(len(batch))
        for p in batch:
            self.metrics.queue_wait.observe(started - p.arrived)
