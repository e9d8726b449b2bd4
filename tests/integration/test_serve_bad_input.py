"""Hostile input against the real ``embedforge serve`` on 127.0.0.1: every bad request is a 4xx with the OpenAI
error shape (never a 500, never a reset connection), and a keep-alive connection survives bad requests."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from embedforge.serving.loadgen import ServerProcess

KEY = "bad-input-key-77"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = ["--api-key-env", "EF_BAD_INPUT_KEY", "--max-inputs", "8", "--max-tokens-per-input", "64",
            "--max-body-bytes", "65536", "--threads", "1", "--max-wait-ms", "1"]
    with ServerProcess("all-MiniLM-L6-v2", args, env={"EF_BAD_INPUT_KEY": KEY}, log_path=log) as proc:
        yield proc


@pytest.fixture()
def conn(server: ServerProcess) -> Iterator[http.client.HTTPConnection]:
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    yield c
    c.close()


def _send(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict]:
    conn.request(method, path, body=body, headers=AUTH if headers is None else headers)
    response = conn.getresponse()
    raw = response.read()
    assert response.getheader("content-type", "").startswith("application/json"), raw[:200]
    return response.status, json.loads(raw)


def _embed(conn: http.client.HTTPConnection, payload: bytes) -> tuple[int, dict]:
    return _send(conn, "POST", "/v1/embeddings", payload)


GOOD = json.dumps({"input": "a short text about retrieval", "model": "all-MiniLM-L6-v2"}).encode()

BAD_BODIES = {
    "lone high surrogate": b'{"input": "a \\ud800 b"}',
    "lone low surrogate in a list": b'{"input": ["fine", "x \\udfff y"]}',
    "surrogate in the model name": b'{"input": "ok", "model": "m\\ud800"}',
    "not JSON": b"input=hello",
    "truncated JSON": b'{"input": "hello',
    "Latin-1 bytes": '{"input": "caf\xe9"}'.encode("latin-1"),
    "invalid UTF-8": b'{"input": "\xff\xfe\xfd"}',
    "a JSON list": b'["hello"]',
    "a JSON string": b'"hello"',
    "null": b"null",
    "empty body": b"",
    "input missing": b'{"model": "x"}',
    "input null": b'{"input": null}',
    "input number": b'{"input": 3.5}',
    "input object": b'{"input": {"a": 1}}',
    "empty input": b'{"input": ""}',
    "whitespace input": b'{"input": "  \\n "}',
    "empty list": b'{"input": []}',
    "list with a number": b'{"input": ["ok", 3]}',
    "token ids": b'{"input": [1, 2, 3]}',
    "too many inputs": json.dumps({"input": ["t"] * 9}).encode(),
    "unknown field": b'{"input": "x", "temperature": 1}',
    "dimensions zero": b'{"input": "x", "dimensions": 0}',
    "dimensions too big": b'{"input": "x", "dimensions": 385}',
    "dimensions a string": b'{"input": "x", "dimensions": "12"}',
    "bad encoding_format": b'{"input": "x", "encoding_format": "hex"}',
    "unknown model": b'{"input": "x", "model": "gpt-4"}',
    "too many tokens": json.dumps({"input": "word " * 200}).encode(),
    "a megabyte-like run without spaces": json.dumps({"input": "x" * 60000}).encode(),
    "a run read as one unknown token": json.dumps({"input": "see " + "x" * 500 + " here"}).encode(),
    "deeply nested": b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "body too large": json.dumps({"input": "y " * 40000}).encode(),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_every_bad_body_is_a_4xx_with_an_openai_error(conn: http.client.HTTPConnection, name: str) -> None:
    status, body = _embed(conn, BAD_BODIES[name])
    assert 400 <= status < 500, (name, status, body)
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]
    # the same connection still answers a good request (keep-alive survived the bad one)
    status, ok = _embed(conn, GOOD)
    assert status == 200 and len(ok["data"][0]["embedding"]) == 384


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16", "utf-32"])
def test_other_unicode_encodings_of_json_read_as_the_same_text(conn: http.client.HTTPConnection, encoding: str) -> None:
    """JSON's own encoding detection (RFC 4627): UTF-16/32 bodies are the same text, not garbage."""
    _, reference = _embed(conn, GOOD)
    status, body = _embed(conn, GOOD.decode().encode(encoding))
    assert status == 200 and body["data"][0]["embedding"] == reference["data"][0]["embedding"]


def test_surrogates_are_400_naming_the_input(conn: http.client.HTTPConnection) -> None:
    status, body = _embed(conn, BAD_BODIES["lone low surrogate in a list"])
    assert status == 400 and body["error"]["code"] == "invalid_encoding" and "input[1]" in body["error"]["message"]


def test_unspaced_megabyte_is_refused_not_embedded_as_three_tokens(conn: http.client.HTTPConnection) -> None:
    status, body = _embed(conn, BAD_BODIES["a megabyte-like run without spaces"])
    assert status == 413 and "characters" in body["error"]["message"]


def test_run_read_as_one_unknown_token_is_refused(conn: http.client.HTTPConnection) -> None:
    status, body = _embed(conn, BAD_BODIES["a run read as one unknown token"])
    assert status == 400 and body["error"]["code"] == "unreadable_input" and "input[0] (character 4, 500" in \
        body["error"]["message"]
    url = "see https://example.com/" + "retrieval-" * 10 + " now"  # a 120-character run the tokenizer reads fine
    status, _ = _embed(conn, json.dumps({"input": url}).encode())
    assert status == 200


def test_keep_alive_survives_a_run_of_bad_requests(conn: http.client.HTTPConnection) -> None:
    for name in ("lone high surrogate", "invalid UTF-8", "truncated JSON", "too many inputs", "unknown model"):
        status, _ = _embed(conn, BAD_BODIES[name])
        assert 400 <= status < 500
    status, ok = _embed(conn, GOOD)
    assert status == 200 and ok["usage"]["prompt_tokens"] > 2


@pytest.mark.parametrize(("method", "path", "headers", "expected"), [
    ("GET", "/v1/models", {}, 401),
    ("POST", "/v1/embeddings", {"Authorization": "Bearer wrong", "Content-Type": "application/json"}, 401),
    ("POST", "/v1/embeddings", {"Authorization": f"Basic {KEY}"}, 401),
    ("GET", "/docs", {}, 401),
    ("GET", "/redoc", {}, 401),
    ("GET", "/openapi.json", {}, 401),
    ("GET", "/no/such/path", {}, 404),
    ("GET", "/v1/models/not-this-one", AUTH, 404),
    ("GET", "/v1/embeddings", AUTH, 405),
    ("DELETE", "/v1/models", AUTH, 405),
])
def test_every_4xx_path(conn: http.client.HTTPConnection, method: str, path: str, headers: dict, expected: int) -> None:
    status, body = _send(conn, method, path, GOOD if method == "POST" else None, headers)
    assert status == expected and body["error"]["message"]
    status, _ = _embed(conn, GOOD)
    assert status == 200


def test_docs_open_with_the_key(conn: http.client.HTTPConnection) -> None:
    status, schema = _send(conn, "GET", "/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200 and "/v1/embeddings" in schema["paths"]
