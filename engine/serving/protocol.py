"""The OpenAI embeddings wire format: request model, input checks, response items.

Inputs are texts: a string or a list of strings. Token-id arrays are refused with a clear message: OpenAI
clients send tiktoken ids, which mean nothing to this model's tokenizer.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictInt

from embedforge.serving.errors import APIError


class EmbeddingRequest(BaseModel):
    """Body of ``POST /v1/embeddings`` (the OpenAI fields; unknown fields are refused)."""

    model_config = ConfigDict(extra="forbid")

    input: Any
    """A string or a list of strings."""
    model: str | None = None
    """Served model name (see /v1/models); optional here, required by the OpenAI client."""
    dimensions: StrictInt | None = None
    """Keep the first N components (Matryoshka) and re-normalize."""
    encoding_format: Literal["float", "base64"] = "float"
    """``float``: JSON numbers; ``base64``: little-endian float32 bytes, base64-encoded."""
    user: str | None = None
    """End-user id (accepted and ignored, as a hint for abuse monitoring in OpenAI's API)."""
    input_type: Literal["query", "document"] | None = None
    """Which encoder of a model with separate query and document encoders (``train.mode: query``) runs the
    inputs (default ``document``); a single-encoder model encodes both alike. Not an OpenAI field: the name
    other embedding APIs use for the same choice."""


def _token_array(value: object) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        or (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
        )
    )


def _check_unicode(text: str, name: str) -> None:
    """400 for text that is not valid Unicode: JSON can carry a lone surrogate (``"\\ud800"``), UTF-8 cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(
            400,
            f"'{name}' holds a lone surrogate (U+{ord(text[exc.start]):04X} at character {exc.start}), "
            "which is not valid Unicode text; send well-formed UTF-8",
            param="input",
            code="invalid_encoding",
        ) from None


def parse_inputs(value: object, max_inputs: int) -> list[str]:
    """The request's texts, or an :class:`APIError` (400) saying exactly what is wrong with ``input``."""
    if isinstance(value, str):
        if not value.strip():
            raise APIError(
                400, "'input' is empty (or only whitespace); send text", param="input", code="empty_input"
            )
        _check_unicode(value, "input")
        return [value]
    if not isinstance(value, list):
        raise APIError(
            400,
            f"'input' must be a string or a list of strings (got {type(value).__name__})",
            param="input",
            code="invalid_type",
        )
    if not value:
        raise APIError(
            400, "'input' is an empty list; send at least one text", param="input", code="empty_input"
        )
    if _token_array(value) or any(_token_array(item) for item in value):
        raise APIError(
            400,
            "token-id arrays are not supported: send text (ids from another tokenizer, e.g. "
            "tiktoken, do not match this model's; with LangChain set check_embedding_ctx_length=False)",
            param="input",
            code="invalid_type",
        )
    if len(value) > max_inputs:
        raise APIError(
            400,
            f"too many inputs: {len(value)} (this server accepts at most {max_inputs} per request)",
            param="input",
            code="too_many_inputs",
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise APIError(
                400,
                f"'input[{i}]' must be a string (got {type(item).__name__})",
                param="input",
                code="invalid_type",
            )
        if not item.strip():
            raise APIError(
                400,
                f"'input[{i}]' is empty (or only whitespace); send text",
                param="input",
                code="empty_input",
            )
        _check_unicode(item, f"input[{i}]")
    return value


def check_dimensions(dimensions: int | None, model_dim: int) -> int | None:
    """``dimensions`` if usable (``None`` = full size), else a 400 naming the model's size."""
    if dimensions is None:
        return None
    if not 1 <= dimensions <= model_dim:
        raise APIError(
            400,
            f"'dimensions' must be between 1 and {model_dim} for this model (got {dimensions})",
            param="dimensions",
            code="invalid_dimensions",
        )
    return dimensions


def encode_base64(vector: np.ndarray) -> str:
    """Little-endian float32 bytes, base64 (the OpenAI client decodes ``np.frombuffer(..., 'float32')``)."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def embedding_items(vectors: np.ndarray, encoding_format: str) -> list[dict[str, object]]:
    """The ``data`` list of the response, one item per input in order."""
    if encoding_format == "base64":
        values: list[object] = [encode_base64(v) for v in vectors]
    else:
        values = vectors.astype(np.float32).tolist()
    return [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)]
