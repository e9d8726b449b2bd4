"""Request parsing, limits, auth and error shapes of the embeddings server (no model needed)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from embedforge.serving.app import served_name
from embedforge.serving.auth import api_key_from_env, key_matches
from embedforge.serving.config import ServeConfig
from embedforge.serving.errors import APIError
from embedforge.serving.limits import apply_token_limit
from embedforge.serving.protocol import (
    EmbeddingRequest,
    check_dimensions,
    embedding_items,
    encode_base64,
    parse_inputs,
)


def test_parse_inputs_accepts_a_string_or_a_list_of_strings() -> None:
    assert parse_inputs("a text", 4) == ["a text"]
    assert parse_inputs(["a", "b c"], 4) == ["a", "b c"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "'input' is empty"),
        (" \n\t", "only whitespace"),
        ([], "empty list"),
        (["a", ""], "'input[1]' is empty"),
        (["a", "  "], "'input[1]' is empty (or only whitespace)"),
        (None, "got NoneType"),
        (3, "got int"),
        ({"a": 1}, "got dict"),
        ([1, 2, 3], "token-id arrays"),
        ([[1, 2], [3]], "token-id arrays"),
        (["a", 2.5], "'input[1]' must be a string (got float)"),
        (["a", True], "'input[1]' must be a string (got bool)"),
        (["a"] * 5, "too many inputs: 5 (this server accepts at most 4"),
    ],
)
def test_parse_inputs_refuses_with_a_clear_400(value: object, fragment: str) -> None:
    with pytest.raises(APIError) as info:
        parse_inputs(value, 4)
    assert info.value.status == 400 and info.value.param == "input"
    assert fragment in info.value.message


def test_check_dimensions_bounds() -> None:
    assert check_dimensions(None, 384) is None
    assert check_dimensions(384, 384) == 384 and check_dimensions(1, 384) == 1
    for bad in (0, -3, 385):
        with pytest.raises(APIError, match="between 1 and 384"):
            check_dimensions(bad, 384)


def test_request_model_is_strict() -> None:
    with pytest.raises(ValueError, match="extra"):
        EmbeddingRequest.model_validate({"input": "a", "temperature": 0})
    with pytest.raises(ValueError, match="dimensions"):
        EmbeddingRequest.model_validate({"input": "a", "dimensions": "64"})
    with pytest.raises(ValueError, match="encoding_format"):
        EmbeddingRequest.model_validate({"input": "a", "encoding_format": "int8"})
    assert EmbeddingRequest.model_validate({"input": "a"}).encoding_format == "float"


def test_base64_is_little_endian_float32_like_openai() -> None:
    vector = np.array([0.5, -1.25, 3.0e-8, 1.0], dtype=np.float32)
    raw = base64.b64decode(encode_base64(vector))
    assert raw == vector.astype("<f4").tobytes() and len(raw) == 16
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="float32"), vector)
    items = embedding_items(np.stack([vector, -vector]), "float")
    assert [i["index"] for i in items] == [0, 1] and items[1]["embedding"] == (-vector).tolist()


def test_token_limit_error_or_truncate() -> None:
    with pytest.raises(APIError) as info:
        apply_token_limit([3, 8, 9], 8, "error")
    assert (
        info.value.status == 413 and "input[2]" in info.value.message and "input[1]" not in info.value.message
    )
    assert apply_token_limit([3, 8, 9], 8, "truncate") == [3, 8, 8]
    assert apply_token_limit([3, 8], 8, "error") == [3, 8]


def test_bearer_key_comparison() -> None:
    assert key_matches("Bearer s3cret", "s3cret") and key_matches("bearer  s3cret ", "s3cret")
    assert not key_matches("Bearer s3cre", "s3cret") and not key_matches("s3cret", "s3cret")
    assert not key_matches(None, "s3cret") and not key_matches("Basic s3cret", "s3cret")


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert api_key_from_env(None) is None
    monkeypatch.setenv("EF_SERVE_KEY", " k1 ")
    assert api_key_from_env("EF_SERVE_KEY") == "k1"
    monkeypatch.setenv("EF_SERVE_KEY", "")
    with pytest.raises(ValueError, match="EF_SERVE_KEY is not set or empty"):
        api_key_from_env("EF_SERVE_KEY")


def test_config_validation_names_the_option() -> None:
    ServeConfig(model="m").validate()
    with pytest.raises(ValueError, match="--max-inputs"):
        ServeConfig(model="m", max_inputs=0).validate()
    with pytest.raises(ValueError, match="--on-too-long"):
        ServeConfig(model="m", on_too_long="drop").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--device: unknown device 'tpu9'"):
        ServeConfig(model="m", device="tpu9").validate()
    with pytest.raises(ValueError, match="--max-chars-per-input"):
        ServeConfig(model="m", max_chars_per_input=3).validate()


def test_served_name() -> None:
    assert served_name(ServeConfig(model="all-MiniLM-L6-v2")) == "all-MiniLM-L6-v2"
    assert served_name(ServeConfig(model="runs/q/train-ab12/model/")) == "train-ab12/model"
    assert served_name(ServeConfig(model="/x/my-model", served_model_name="prod")) == "prod"
