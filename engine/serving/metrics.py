"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
KNOWN_PATHS = ("/v1/embeddings", "/v1/models", "/health", "/metrics")


class ServeMetrics:
    """Requests, latency, batch sizes, queue wait and depth, model time; rendered at ``/metrics``."""

    def __init__(self, model_name: str, model_id: str, dim: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "embedforge_requests", "HTTP requests by path and status code", ["path", "status"], registry=r
        )
        self.latency = Histogram(
            "embedforge_request_seconds",
            "HTTP request latency by path",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inputs = Counter("embedforge_inputs", "Texts embedded", registry=r)
        self.tokens = Counter("embedforge_tokens", "Tokens embedded (special tokens included)", registry=r)
        self.batch_inputs = Histogram(
            "embedforge_batch_inputs", "Texts per model batch", buckets=COUNT_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "embedforge_batch_requests",
            "Requests merged into one model batch",
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "embedforge_queue_wait_seconds",
            "Time a request waited before its batch ran",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "embedforge_model_seconds", "Time of one model batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("embedforge_queue_depth", "Requests waiting for the model", registry=r)
        info = Gauge("embedforge_model_info", "The served model", ["model", "model_id", "dim"], registry=r)
        info.labels(model=model_name, model_id=model_id, dim=str(dim)).set(1)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request (including those refused by auth or size limits)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(path=path, status=str(status)).inc()
            self.metrics.latency.labels(path=path).observe(time.perf_counter() - start)
