"""Request limits: body size (413, checked before parsing), characters and tokens per input (413 or truncate)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedforge.serving.errors import APIError


class BodySizeLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: int | None) -> APIError:
        got = f" ({size} bytes)" if size is not None else ""
        return APIError(
            413,
            f"request body too large{got}; the limit is {self.max_bytes} bytes — send fewer or "
            "shorter inputs per request",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(int(length)).response()(scope, receive, send)
            return
        # Read the body here (bounded), then replay it: a chunked body has no Content-Length to trust.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(None).response()(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def apply_char_limit(texts: list[str], max_chars: int, policy: str) -> list[str]:
    """Texts within ``max_chars`` characters; with ``policy='error'`` a longer one is a 413, else it is cut.

    Checked before tokenizing, so a megabyte without spaces (one unknown token) is neither embedded as a few
    tokens nor tokenized at all.
    """
    too_long = [i for i, t in enumerate(texts) if len(t) > max_chars]
    if too_long and policy == "error":
        shown = ", ".join(f"input[{i}] ({len(texts[i])} characters)" for i in too_long[:5])
        raise APIError(
            413,
            f"{shown}{' ...' if len(too_long) > 5 else ''}: more than {max_chars} characters (this server's "
            "limit per input); shorten the text, or start the server with --on-too-long truncate",
            param="input",
            code="input_too_long",
        )
    return [t[:max_chars] if len(t) > max_chars else t for t in texts]


LONG_RUN = re.compile(r"\S{101,}")
"""Text without spaces longer than BERT WordPiece's 100-character word limit: the prefilter of
:func:`unreadable_runs` (most texts have none, so the tokenizer is not run twice)."""


def unreadable_runs(tokenizer: object, texts: Sequence[str], limit: int) -> dict[int, tuple[int, int]]:
    """Inputs in which the tokenizer reads a run of over 100 characters as ONE unknown token (a megabyte
    without spaces becomes ``[UNK]``): input index → (start character, length) of the first such run, within
    the first ``limit`` tokens. Runs on the model thread, like :func:`count_tokens`."""
    unk = getattr(tokenizer, "unk_token_id", None)
    suspects = [i for i, t in enumerate(texts) if LONG_RUN.search(t)]
    if unk is None or not suspects:
        return {}
    stripped = [texts[i].strip() for i in suspects]
    encoded = tokenizer(stripped, add_special_tokens=False, truncation=True, max_length=limit,  # type: ignore[operator]
                        return_offsets_mapping=True)
    found: dict[int, tuple[int, int]] = {}
    for i, ids, offsets in zip(suspects, encoded["input_ids"], encoded["offset_mapping"], strict=True):
        for token, (a, b) in zip(ids, offsets, strict=True):
            if token == unk and b - a > 100:
                found[i] = (a, b - a)
                break
    return found


def refuse_unreadable(found: dict[int, tuple[int, int]], policy: str) -> None:
    """With ``policy='error'``, a 400 naming the inputs :func:`unreadable_runs` found."""
    if not found or policy != "error":
        return
    shown = ", ".join(f"input[{i}] (character {a}, {n} characters)" for i, (a, n) in list(found.items())[:5])
    raise APIError(
        400,
        f"{shown}: a run of text without spaces that the tokenizer reads as one unknown token, so its embedding "
        "would not depend on it; break it up or remove it (or start the server with --on-too-long truncate)",
        param="input",
        code="unreadable_input",
    )


def count_tokens(tokenizer: object, texts: Sequence[str], limit: int) -> list[int]:
    """Token counts with special tokens, counted up to ``limit + 1`` (enough to tell "too long" apart).

    Texts are stripped first, as the encoder (and sentence-transformers) does before tokenizing. Runs on the
    model thread: a Hugging Face fast tokenizer must not be called from two threads at once.
    """
    stripped = [t.strip() for t in texts]
    ids = tokenizer(stripped, add_special_tokens=True, truncation=True, max_length=limit + 1)["input_ids"]  # type: ignore[operator]
    return [len(x) for x in ids]


def apply_token_limit(lengths: list[int], limit: int, policy: str) -> list[int]:
    """Counts the model will process; with ``policy='error'`` any text over ``limit`` is a 413."""
    too_long = [i for i, n in enumerate(lengths) if n > limit]
    if too_long and policy == "error":
        shown = ", ".join(f"input[{i}]" for i in too_long[:5]) + (" ..." if len(too_long) > 5 else "")
        raise APIError(
            413,
            f"{shown}: more than {limit} tokens (this server's limit per input); shorten the text, "
            "or start the server with --on-too-long truncate",
            param="input",
            code="input_too_long",
        )
    return [min(n, limit) for n in lengths]
