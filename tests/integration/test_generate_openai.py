"""The openai backend against a real OpenAI-compatible server on 127.0.0.1 (FastAPI + uvicorn), backed by the
real hf backend with the packaged SmolLM2; failures (429, 500, 400) are injected by the server."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from embedforge.generation.backends import Sampling
from embedforge.generation.hf_backend import HFBackend
from embedforge.generation.openai_backend import OpenAIBackend, ServerUnavailable

SECRET = "sk-test-not-a-real-key-123"
PROMPT = [{"role": "user", "content": "Passage: Inverted files map each term to the documents that hold it.\n"
                                      "Write one search query for this passage."}]


class ChatServer:
    """A /v1/chat/completions server on a free local port; ``fail_next`` holds statuses to answer first."""

    def __init__(self, backend: HFBackend) -> None:
        import uvicorn

        self.fail_next: list[int] = []
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body)
            self.auth.append(request.headers.get("authorization"))
            if self.fail_next:
                status = self.fail_next.pop(0)
                headers = {"Retry-After": "0"} if status == 429 else {}
                return JSONResponse({"error": {"message": f"injected {status}"}}, status_code=status, headers=headers)
            sampling = Sampling(n=body.get("n", 1), temperature=body.get("temperature", 0.0),
                                top_p=body.get("top_p", 1.0), max_tokens=body.get("max_tokens", 16))
            [completion] = backend.generate([body["messages"]], sampling, seed=body.get("seed", 0))
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                       for i, t in enumerate(completion.texts)]
            return JSONResponse({"id": "x", "object": "chat.completion", "model": body["model"], "choices": choices,
                                 "usage": {"prompt_tokens": completion.prompt_tokens,
                                           "completion_tokens": completion.output_tokens}})

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "test server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(smollm2_hf: HFBackend) -> Iterator[ChatServer]:
    with ChatServer(smollm2_hf) as srv:
        yield srv


def client(server: ChatServer, **kwargs: Any) -> OpenAIBackend:
    return OpenAIBackend(server.base_url, "smollm2", **{"backoff_s": 0.01, "max_retries": 3, **kwargs})


def test_completions_with_key_from_env(server: ChatServer, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("EF_TEST_KEY", SECRET)
    server.requests.clear()
    caplog.set_level(logging.DEBUG)
    api = client(server, api_key_env="EF_TEST_KEY", concurrency=2)
    out = api.generate([PROMPT, PROMPT, PROMPT], Sampling(n=1, temperature=0.0, max_tokens=12), seed=3)
    assert len(out) == 3 and all(c.error is None for c in out)
    assert all(c.texts[0].strip() and c.prompt_tokens > 10 and 0 < c.output_tokens <= 12 for c in out)
    assert out[0].texts == out[1].texts == out[2].texts  # greedy
    assert server.auth[-3:] == [f"Bearer {SECRET}"] * 3
    assert server.requests[-1]["seed"] == 3 and server.requests[-1]["max_tokens"] == 12
    assert SECRET not in caplog.text and SECRET not in api.generator_id


def test_retries_429_and_500_then_succeeds(server: ChatServer, caplog: pytest.LogCaptureFixture) -> None:
    server.fail_next = [429, 500, 503]
    api = client(server, api_key_env=None)
    caplog.set_level(logging.WARNING)
    [completion] = api.generate([PROMPT], Sampling(temperature=0.0, max_tokens=8), seed=1)
    assert completion.error is None and completion.texts[0].strip()
    assert api.retries == 3
    assert "HTTP 429" in caplog.text and "HTTP 500" in caplog.text


def test_gives_up_after_max_retries(server: ChatServer) -> None:
    server.fail_next = [500] * 3
    api = client(server, api_key_env=None, max_retries=2)
    with pytest.raises(ServerUnavailable, match="after 2 retries"):
        api.generate([PROMPT], Sampling(temperature=0.0, max_tokens=8), seed=1)
    assert server.fail_next == []


def test_client_error_is_returned_not_retried(server: ChatServer) -> None:
    server.fail_next = [400]
    api = client(server, api_key_env=None)
    out = api.generate([PROMPT, PROMPT], Sampling(temperature=0.0, max_tokens=8), seed=1)
    errors = [c.error for c in out if c.error]
    assert len(errors) == 1 and "HTTP 400" in errors[0]
    assert api.retries == 0 and api.failed == 1


def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", api_key_env=None, max_retries=1, backoff_s=0.01,
                        timeout_s=2)
    with pytest.raises(ServerUnavailable, match="ConnectError"):
        api.generate([PROMPT], Sampling(max_tokens=4), seed=0)
    assert api.retries == 1
