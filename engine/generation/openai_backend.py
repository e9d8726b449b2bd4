"""OpenAI-compatible HTTP backend (vLLM serve, llama.cpp server, TGI, cloud APIs): ``/v1/chat/completions``.

Requests run concurrently (at most ``concurrency`` in flight); 429, 5xx, timeouts and connection errors are
retried with exponential backoff and jitter (``Retry-After`` wins when the server sends it). The API key comes
from the environment variable named in the spec and is never logged or put in an error message. A prompt the
server rejects for good (other 4xx) comes back with ``error`` set, so the stage quarantines it; a server that
stays unavailable after all retries stops the stage (re-run to resume).

Why ``httpx`` and not the ``openai`` client with its own ``max_retries``: the stage records how many requests
were retried (the client's retries are invisible to its caller), treats a prompt the server rejects for good as
a quarantined row rather than an exception, and speaks to servers that implement only ``/v1/chat/completions``;
the retry loop below is those 20 lines.

>>> api = OpenAIBackend("http://127.0.0.1:8000/v1", "smollm2", api_key_env=None)             # doctest: +SKIP
>>> api.generate([[{"role": "user", "content": "Hi"}]], Sampling(max_tokens=8), seed=1)      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

import httpx

from embedforge.generation.backends import Completion, Messages, Sampling

log = logging.getLogger("embedforge.generate.openai")
RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))


class ServerUnavailable(RuntimeError):
    """The server kept failing after every retry."""


class OpenAIBackend:
    """Client of an OpenAI-compatible chat completions endpoint."""

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 5,
                 backoff_s: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        elif api_key_env:
            log.info("environment variable %s is not set: sending requests without an API key", api_key_env)
        self.generator_id = f"openai:{model}@{self.base_url}"
        self.retries = 0
        """Requests retried so far (for the manifest)."""
        self.failed = 0
        """Prompts the server rejected for good."""

    def generate(self, prompts: list[Messages], sampling: Sampling, seed: int) -> list[Completion]:
        """Completions of all ``prompts`` in input order (``seed`` is sent; servers may ignore it)."""
        if not prompts:
            return []
        return asyncio.run(self._all(prompts, sampling, seed))

    async def _all(self, prompts: list[Messages], sampling: Sampling, seed: int) -> list[Completion]:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, headers=self._headers) as client:
            tasks = [self._one(client, gate, m, sampling, seed) for m in prompts]
            return list(await asyncio.gather(*tasks))

    async def _one(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, messages: Messages,
                   sampling: Sampling, seed: int) -> Completion:
        body: dict[str, Any] = {"model": self.model, "messages": messages, **sampling.as_dict(), "seed": seed}
        url = f"{self.base_url}/chat/completions"
        problem = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            async with gate:
                try:
                    response = await client.post(url, json=body)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    problem = f"{type(exc).__name__}"
                else:
                    if response.status_code == 200:
                        return _completion(response.json())
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                    if response.status_code not in RETRY_STATUS:
                        self.failed += 1
                        return Completion([], 0, 0, error=problem)
                    retry_after = _retry_after(response)
            if attempt == self.max_retries:
                break
            self.retries += 1
            delay = retry_after if retry_after is not None else self.backoff_s * 2**attempt * (0.5 + random.random())
            log.warning("%s: %s; retry %d/%d in %.1fs", url, problem, attempt + 1, self.max_retries, delay)
            await asyncio.sleep(delay)
        raise ServerUnavailable(f"{url}: still failing after {self.max_retries} retries ({problem})")

    def close(self) -> None:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def _completion(data: dict[str, Any]) -> Completion:
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    texts = [((c.get("message") or {}).get("content") or "") for c in choices]
    usage = data.get("usage") or {}
    return Completion(texts=texts, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      output_tokens=int(usage.get("completion_tokens") or 0))
