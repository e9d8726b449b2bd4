"""The FastAPI app: OpenAI-compatible ``POST /v1/embeddings``, ``GET /v1/models``, ``/health``, ``/metrics``.

>>> config = ServeConfig(model="all-MiniLM-L6-v2")
>>> app = create_app(config)          # loads the model once; uvicorn.run(app, host=..., port=...)

A request is checked (auth, body size, fields, inputs, dimensions), its tokens counted on the model thread,
then it joins a dynamic batch (:mod:`embedforge.serving.batcher`). Vectors are L2-normalized; with ``dimensions``
they are truncated to the first N components and re-normalized (Matryoshka).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Response

from embedforge import device as dev
from embedforge.encoding.encoder import Encoder, truncate_normalize
from embedforge.models import resolve_model
from embedforge.serving.auth import BearerAuth
from embedforge.serving.batcher import DynamicBatcher
from embedforge.serving.config import ServeConfig
from embedforge.serving.errors import APIError, install_error_handlers
from embedforge.serving.limits import (
    BodySizeLimit,
    apply_char_limit,
    apply_token_limit,
    count_tokens,
    refuse_unreadable,
    unreadable_runs,
)
from embedforge.serving.metrics import MetricsMiddleware, ServeMetrics
from embedforge.serving.model_dir import check_model_dir
from embedforge.serving.protocol import EmbeddingRequest, check_dimensions, embedding_items, parse_inputs

log = logging.getLogger("embedforge.serve")


def served_name(config: ServeConfig) -> str:
    """``--served-model-name``, else the path's last part (``x/train-y/model`` gives ``train-y/model``)."""
    if config.served_model_name:
        return config.served_model_name
    parts = Path(config.model.rstrip("/")).parts
    if len(parts) >= 2 and parts[-1] == "model":
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1] if parts else config.model


def load_encoder(config: ServeConfig) -> Encoder:
    """Check the model directory, then load it (safetensors, no remote code) with the project's encoder."""
    path = resolve_model(config.model)
    info = check_model_dir(path)
    limit = config.max_tokens_per_input
    if limit and info.max_seq_length and limit > info.max_seq_length:
        raise ValueError(
            f"--max-tokens-per-input {limit} is larger than the model's max_seq_length "
            f"{info.max_seq_length} ({path})"
        )
    dev.set_threads(config.threads)
    return Encoder(
        path, device=config.device, dtype=config.dtype, max_seq_length=limit, backend=config.backend
    )


def query_encoder_for(config: ServeConfig, encoder: Encoder) -> Encoder | None:
    """The query route's encoder of a model with separate query and document encoders (``input_type: query``),
    or None for a single-encoder model."""
    if encoder.route is None:
        return None
    return Encoder(encoder.path, device=config.device, dtype=config.dtype,
                   max_seq_length=config.max_tokens_per_input, backend=config.backend, role="query")


@dataclass
class ServedModel:
    """The loaded model and the facts the endpoints report."""

    encoder: Encoder
    name: str
    created: int
    token_limit: int
    model_id: str
    """Content hash of the served model: the encoder's, or the whole folder's for a query/document model (whose
    document route keeps its start model's id)."""

    def names(self) -> set[str]:
        return {self.name, self.model_id}


def create_app(config: ServeConfig, encoder: Encoder | None = None) -> FastAPI:
    """The server for ``config``; pass an already loaded ``encoder`` to share one (tests)."""
    config.validate()
    encoder = encoder or load_encoder(config)
    limit = min(config.max_tokens_per_input or encoder.max_seq_length, encoder.max_seq_length)
    char_limit = config.max_chars_per_input or 16 * limit
    model = ServedModel(encoder, served_name(config), int(Path(encoder.path).stat().st_mtime), limit,
                        encoder.folder_id)
    metrics = ServeMetrics(model.name, model.model_id, encoder.dim)
    def batcher_for(enc: Encoder) -> DynamicBatcher:
        return DynamicBatcher(
            lambda texts: enc.encode(texts),
            max_batch_tokens=config.max_batch_tokens,
            max_wait_s=config.max_wait_ms / 1000,
            max_queue=config.max_queue,
            metrics=metrics,
        )

    batcher = batcher_for(encoder)
    query_encoder = query_encoder_for(config, encoder)
    routes = {"document": (encoder, batcher)}
    if query_encoder is not None:  # separate query and document encoders: input_type picks one
        routes["query"] = (query_encoder, batcher_for(query_encoder))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for _, route_batcher in routes.values():
            await route_batcher.start()
        log.info(
            "serving %s (model_id %s, %d d, max %d tokens/input) on %s",
            model.name,
            model.model_id,
            encoder.dim,
            limit,
            encoder.device,
        )
        yield
        for _, route_batcher in routes.values():
            await route_batcher.stop()

    app = FastAPI(
        title="embedforge",
        version="0.1.0",
        lifespan=lifespan,
        summary="OpenAI-compatible embeddings for a domain-tuned model",
    )
    app.state.batcher = batcher
    app.state.model = model
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(BearerAuth, api_key=config.api_key, public_docs=config.public_docs)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts refused requests too

    @app.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest) -> Response:
        if request.model is not None and request.model not in model.names():
            raise APIError(
                404,
                f"The model '{request.model}' does not exist on this server; it serves "
                f"'{model.name}' (GET /v1/models)",
                param="model",
                code="model_not_found",
            )
        texts = apply_char_limit(parse_inputs(request.input, config.max_inputs), char_limit, config.on_too_long)
        dim = check_dimensions(request.dimensions, encoder.dim)
        enc, route_batcher = routes.get(request.input_type or "document", routes["document"])
        counted = await route_batcher.on_model_thread(count_tokens, enc.tokenizer, texts, limit)
        refuse_unreadable(await route_batcher.on_model_thread(unreadable_runs, enc.tokenizer, texts, limit),
                          config.on_too_long)
        lengths = apply_token_limit(counted, limit, config.on_too_long)
        vectors = await route_batcher.submit(texts, tokens=sum(lengths))
        if dim is not None:
            vectors = truncate_normalize(vectors, dim)
        metrics.inputs.inc(len(texts))
        metrics.tokens.inc(sum(lengths))
        body = {
            "object": "list",
            "data": embedding_items(vectors, request.encoding_format),
            "model": model.name,
            "usage": {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)},
        }
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    def model_card() -> dict[str, object]:
        return {
            "id": model.name,
            "object": "model",
            "created": model.created,
            "owned_by": "embedforge",
            "model_id": model.model_id,
            "dimensions": encoder.dim,
            "max_input_tokens": limit,
            "max_input_chars": char_limit,
            "input_types": sorted(routes),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model_info(name: str) -> dict[str, object]:
        if name not in model.names():
            raise APIError(
                404,
                f"The model '{name}' does not exist on this server; it serves '{model.name}'",
                param="model",
                code="model_not_found",
            )
        return model_card()

    @app.get("/health")
    async def health() -> Response:
        ok = all(route_batcher.alive for _, route_batcher in routes.values())
        body = {
            "status": "ok" if ok else "model worker stopped",
            "model": model.name,
            "model_id": model.model_id,
            "dimensions": encoder.dim,
            "max_input_tokens": limit,
            "device": str(encoder.device),
            "backend": encoder.backend,
            "batches": batcher.batches_run,
            "in_flight": batcher.in_flight,
            "model_busy": batcher.model_busy,
            "time": time.time(),
        }
        return Response(json.dumps(body), status_code=200 if ok else 503, media_type="application/json")

    @app.get("/metrics")
    async def prometheus() -> Response:
        text, content_type = metrics.render()
        return Response(text, media_type=content_type)

    return app
