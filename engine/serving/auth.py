"""Bearer-token auth for the ``/v1/`` endpoints and the API docs, compared in constant time.

The key comes from an environment variable named on the command line (never from argv, which other users can
read in ``ps``). ``/health`` and ``/metrics`` stay open for probes and scrapers. The API docs (``/docs``,
``/redoc``, ``/openapi.json``) follow the auth setting unless the server is started with ``--public-docs``.
"""

from __future__ import annotations

import hmac
import os

from starlette.types import ASGIApp, Receive, Scope, Send

from embedforge.serving.errors import error_response

PROTECTED_PREFIX = "/v1/"
DOC_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
"""FastAPI's documentation pages: they describe the API, so they are behind the key unless made public."""


def api_key_from_env(var: str | None) -> str | None:
    """The key held by ``var`` (``None`` when no variable is named); named but empty is an error."""
    if not var:
        return None
    key = os.environ.get(var, "").strip()
    if not key:
        raise ValueError(
            f"--api-key-env {var}: the environment variable {var} is not set or empty; export it "
            "with the key clients must send, or drop --api-key-env to serve without auth"
        )
    return key


def key_matches(header: str | None, expected: str) -> bool:
    """True when ``header`` is ``Bearer <expected>`` (constant-time comparison of the token)."""
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


class BearerAuth:
    """ASGI middleware: answer 401 on ``/v1/`` paths and the API docs unless the request carries the right
    bearer token."""

    def __init__(self, app: ASGIApp, api_key: str | None, public_docs: bool = False) -> None:
        self.app = app
        self.api_key = api_key
        self.public_docs = public_docs

    def protects(self, path: str) -> bool:
        """True for the paths that need the key (when one is set)."""
        return path.startswith(PROTECTED_PREFIX) or (not self.public_docs and path.rstrip("/") in DOC_PATHS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.api_key is None or scope["type"] != "http" or not self.protects(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        challenge = {"WWW-Authenticate": "Bearer"}
        if header is None:
            response = error_response(
                401,
                "Missing API key: send the header 'Authorization: Bearer <key>'",
                code="missing_api_key",
                headers=challenge,
            )
        elif not key_matches(header.decode("latin-1"), self.api_key):
            response = error_response(
                401, "Incorrect API key provided", code="invalid_api_key", headers=challenge
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
