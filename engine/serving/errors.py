"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}`` with a proper status.

Validation errors (FastAPI's 422) become 400, as OpenAI answers; unknown paths 404; anything unexpected 500
without a traceback in the body (it goes to the log).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("embedforge.serve")

_TYPES = {
    400: "invalid_request_error",
    415: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error answered to the client as ``status`` with an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:  # noqa: A002
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.headers = headers

    def response(self) -> JSONResponse:
        """The JSON response with the OpenAI error body."""
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return _AsciiJSONResponse(body, status_code=self.status, headers=self.headers)


def error_response(status: int, message: str, **details: Any) -> JSONResponse:
    """A JSON response with the OpenAI error body; ``details`` are :class:`APIError`'s keywords (``param``,
    ``code``, ``type``, ``headers``)."""
    return APIError(status, message, **details).response()


class _AsciiJSONResponse(JSONResponse):
    """JSON escaped to ASCII: a message that quotes client text holding a lone surrogate still renders."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """A readable message and the offending parameter for a request validation error."""
    parts: list[str] = []
    param: str | None = None
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        kind = err.get("type", "")
        field = ".".join(loc)
        if kind == "json_invalid":
            at = f" at character {loc[0]}" if loc else ""
            parts.append(
                f"request body is not valid JSON{at} ({err.get('ctx', {}).get('error', err.get('msg'))})"
            )
            continue
        param = param or (loc[0] if loc else None)
        if not loc and kind != "missing":
            parts.append(
                "request body must be a JSON object with Content-Type: application/json, like "
                '{"input": "text", "model": "..."}'
            )
        elif kind == "missing" and not loc:
            parts.append('request body is required: send JSON like {"input": "text", "model": "..."}')
        elif kind == "missing":
            parts.append(f"'{field}' is required")
        elif kind == "extra_forbidden":
            parts.append(f"Unrecognized request argument supplied: {field}")
        else:
            parts.append(f"'{field or 'body'}': {err.get('msg')}")
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to the OpenAI shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return error_response(400, message, param=param, code="invalid_request")

    @app.exception_handler(UnicodeError)
    async def _unicode(_: Request, exc: UnicodeError) -> JSONResponse:
        return error_response(400, f"the request holds text that is not valid Unicode ({exc}); send UTF-8 JSON",
                              code="invalid_encoding")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = (
                f"Unknown path {request.url.path}; endpoints: POST /v1/embeddings, GET /v1/models, "
                "/health, /metrics"
            )
        elif exc.status_code == 400:
            message = f"{exc.detail}: send a UTF-8 JSON object with Content-Type: application/json"
        elif exc.status_code == 405:
            message = f"Method {request.method} not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, code=None, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected server error", exc_info=exc)
        return error_response(
            500, f"internal server error ({type(exc).__name__}); see the server log", code="internal_error"
        )
