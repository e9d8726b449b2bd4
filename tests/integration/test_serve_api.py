"""The real ``embedforge serve`` on 127.0.0.1 (one server per module), driven by the openai client."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from embedforge.serving.loadgen import ServerProcess, run_load

KEY = "test-key-3f9a"
MAX_INPUTS = 64
TOKEN_LIMIT = 128
BODY_LIMIT = 256 * 1024
TEXTS = [
    "Automatic indexing of documents by computer.",
    "What retrieval techniques work for technical reports?",
    "a",
    "Relevance feedback improves recall in boolean and vector space systems alike, according to several "
    "evaluations on small test collections in library science.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = [
        "--api-key-env",
        "EMBEDFORGE_TEST_KEY",
        "--max-inputs",
        str(MAX_INPUTS),
        "--max-tokens-per-input",
        str(TOKEN_LIMIT),
        "--max-body-bytes",
        str(BODY_LIMIT),
        "--max-wait-ms",
        "5",
        "--threads",
        "1",
    ]
    with ServerProcess("all-MiniLM-L6-v2", args, env={"EMBEDFORGE_TEST_KEY": KEY}, log_path=log) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def _expected(st_model, texts: list[str], dim: int | None) -> np.ndarray:
    ref = st_model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    if dim is not None:
        ref = ref[:, :dim]
        ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    return ref


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_health_models_and_metrics(server: ServerProcess, client: openai.OpenAI) -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert (
        health["status"] == "ok" and health["dimensions"] == 384 and health["max_input_tokens"] == TOKEN_LIMIT
    )
    assert health["backend"] in ("onnx", "torch", "st") and health["device"] == "cpu"
    models = client.models.list().data
    assert [m.id for m in models] == ["all-MiniLM-L6-v2"]
    client.embeddings.create(input="warm-up", model="all-MiniLM-L6-v2")
    text = httpx.get(f"{server.url}/metrics").text
    assert re.search(r'embedforge_requests_total\{path="/v1/embeddings",status="200"\} [1-9]', text)
    assert "embedforge_batch_inputs_bucket" in text and 'embedforge_model_info{dim="384"' in text


@pytest.mark.parametrize("dim", [None, 128, 32])
@pytest.mark.parametrize("encoding_format", ["float", "base64", "client-default"])
def test_openai_client_matches_sentence_transformers(
    client: openai.OpenAI, st_model, dim: int | None, encoding_format: str
) -> None:
    kwargs: dict[str, object] = {"input": TEXTS, "model": "all-MiniLM-L6-v2"}
    if dim is not None:
        kwargs["dimensions"] = dim
    if encoding_format != "client-default":  # the client asks for base64 and decodes it itself by default
        kwargs["encoding_format"] = encoding_format
    response = client.embeddings.create(**kwargs)  # type: ignore[arg-type]
    assert [d.index for d in response.data] == list(range(len(TEXTS)))
    if encoding_format == "base64":
        assert all(isinstance(d.embedding, str) for d in response.data)
        got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in response.data])
    else:
        got = np.array([d.embedding for d in response.data], dtype=np.float32)
    want = _expected(st_model, TEXTS, dim)
    assert got.shape == want.shape == (len(TEXTS), dim or 384)
    assert _cosines(got, want).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    lengths = [len(ids) for ids in st_model.tokenizer(TEXTS)["input_ids"]]
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(lengths)
    assert response.model == "all-MiniLM-L6-v2"


def test_single_string_input(client: openai.OpenAI, st_model) -> None:
    got = np.array(client.embeddings.create(input=TEXTS[0], model="all-MiniLM-L6-v2").data[0].embedding)
    assert float(_cosines(got[None], _expected(st_model, TEXTS[:1], None))[0]) >= 0.9999


def _post(server: ServerProcess, body: object, key: str | None = KEY, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, bytes | str):
        return httpx.post(
            f"{server.url}/v1/embeddings",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
            **kwargs,
        )
    return httpx.post(f"{server.url}/v1/embeddings", json=body, headers=headers, **kwargs)


BAD_REQUESTS = [
    ({"input": ""}, 400, "empty"),
    ({"input": []}, 400, "empty"),
    ({"input": ["ok", ""]}, 400, "input[1]"),
    ({"input": ["x"] * (MAX_INPUTS + 1)}, 400, f"at most {MAX_INPUTS}"),
    ({"input": 5}, 400, "string or a list of strings"),
    ({"input": {"text": "a"}}, 400, "string or a list of strings"),
    ({"input": ["ok", 3.5]}, 400, "input[1]"),
    ({"input": [101, 2054, 102]}, 400, "token-id arrays"),
    ({"model": "all-MiniLM-L6-v2"}, 400, "'input' is required"),
    ({"input": "a", "dimensions": 385}, 400, "between 1 and 384"),
    ({"input": "a", "dimensions": 0}, 400, "between 1 and 384"),
    ({"input": "a", "dimensions": "64"}, 400, "dimensions"),
    ({"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "a", "temperature": 1}, 400, "Unrecognized request argument supplied: temperature"),
    ({"input": "a", "model": "text-embedding-3-small"}, 404, "does not exist"),
    ({"input": "word " * 300}, 413, f"more than {TOKEN_LIMIT} tokens"),
    ('{"input": ', 400, "not valid JSON"),
    ({"input": ["y" * 1000] * 300}, 413, "too large"),
]


@pytest.mark.parametrize(
    ("body", "status", "message"), BAD_REQUESTS, ids=[f"{i}-{s}" for i, (_, s, _) in enumerate(BAD_REQUESTS)]
)
def test_bad_requests_get_openai_errors(
    server: ServerProcess, body: object, status: int, message: str
) -> None:
    response = _post(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"], error
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("key", [None, "wrong-key", KEY + "x"])
def test_missing_or_wrong_key_is_401(server: ServerProcess, key: str | None) -> None:
    response = _post(server, {"input": "a"}, key=key)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert ("Missing API key" if key is None else "Incorrect API key") in response.json()["error"]["message"]
    assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_openai_client_raises_typed_errors(server: ServerProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0).embeddings.create(
            input="a", model="all-MiniLM-L6-v2"
        )
    with pytest.raises(openai.BadRequestError, match="between 1 and 384"):
        client.embeddings.create(input="a", model="all-MiniLM-L6-v2", dimensions=1000)


def test_event_loop_answers_while_the_model_works(server: ServerProcess) -> None:
    """/health answers (and says so) while large requests keep the model thread busy."""
    big = {"input": [f"{i} " + "retrieval of scientific documents " * 20 for i in range(MAX_INPUTS)]}
    done: list[int] = []

    def send() -> None:
        assert _post(server, big, timeout=300).status_code == 200
        done.append(1)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    seen_busy = None
    deadline = time.monotonic() + 120
    while seen_busy is None and time.monotonic() < deadline and len(done) < 3:
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        if health["model_busy"] and health["in_flight"] > 0:
            seen_busy = health
    for t in threads:
        t.join(timeout=300)
    assert len(done) == 3
    assert seen_busy is not None, "/health never answered while the model was encoding"


def test_bounded_load_run_has_no_errors(server: ServerProcess, tmp_path: Path) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    result = asyncio.run(
        run_load(server.url, TEXTS, requests=500, concurrency=16, api_key=KEY, model="all-MiniLM-L6-v2")
    )
    after = httpx.get(f"{server.url}/metrics").text
    print(f"\nload run (shared CPU): {result}")
    assert result["errors"] == 0, result["error_examples"]
    assert result["completed"] == 500

    def count(text: str, name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    batches = count(after, "embedforge_batch_requests_count") - count(
        before, "embedforge_batch_requests_count"
    )
    merged = count(after, "embedforge_batch_requests_sum") - count(before, "embedforge_batch_requests_sum")
    assert merged == 500
    assert batches < 500, "concurrent requests were never merged into one model batch"
