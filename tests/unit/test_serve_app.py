"""The app in-process (real model, shared encoder): truncation policy, streaming body limit, no-auth
mode, model lookup. The HTTP server itself is exercised in tests/integration/test_serve_api.py."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedforge.serving.app import create_app
from embedforge.serving.config import ServeConfig

LONG = "information retrieval systems index scientific documents " * 60  # ~360 tokens > 256


@pytest.fixture(scope="module")
def app_client(encoder) -> Iterator[TestClient]:
    config = ServeConfig(model="all-MiniLM-L6-v2", on_too_long="truncate", max_body_bytes=4096, max_wait_ms=1)
    with TestClient(create_app(config, encoder=encoder)) as client:
        yield client


def test_truncate_policy_embeds_the_first_tokens_like_sentence_transformers(
    app_client: TestClient, st_model
) -> None:
    response = app_client.post("/v1/embeddings", json={"input": [LONG, "short"], "encoding_format": "float"})
    assert response.status_code == 200, response.text
    body = response.json()
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    want = st_model.encode([LONG, "short"], normalize_embeddings=True)  # ST truncates at max_seq_length 256
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999
    assert body["usage"]["prompt_tokens"] == 256 + 3  # truncated long text + [CLS] short [SEP]


def test_streamed_body_over_the_limit_is_413(app_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"input": ["'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    response = app_client.post(
        "/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "limit is 4096 bytes" in response.json()["error"]["message"]


def test_no_key_configured_means_open_endpoints(app_client: TestClient) -> None:
    assert app_client.post("/v1/embeddings", json={"input": "a"}).status_code == 200
    models = app_client.get("/v1/models").json()["data"]
    assert models[0]["id"] == "all-MiniLM-L6-v2" and models[0]["dimensions"] == 384


def test_model_is_found_by_name_or_content_hash(app_client: TestClient, encoder) -> None:
    assert app_client.get(f"/v1/models/{encoder.model_id}").status_code == 200
    by_hash = app_client.post("/v1/embeddings", json={"input": "a", "model": encoder.model_id})
    assert by_hash.status_code == 200 and by_hash.json()["model"] == "all-MiniLM-L6-v2"
    missing = app_client.get("/v1/models/gpt-4")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_non_json_body_and_unknown_path_get_the_openai_error_shape(app_client: TestClient) -> None:
    form = app_client.post(
        "/v1/embeddings",
        content=b"input=hello",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 400 and "JSON object" in form.json()["error"]["message"]
    unknown = app_client.get("/v2/embeddings")
    assert unknown.status_code == 404 and "Unknown path" in unknown.json()["error"]["message"]


def test_max_tokens_per_input_above_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than the model's max_seq_length 256"):
        create_app(ServeConfig(model="all-MiniLM-L6-v2", max_tokens_per_input=1000))
