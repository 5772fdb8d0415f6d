"""Request bodies are limited while they stream in, never after they are buffered.

:func:`read_body` is for routes that read their body themselves (ingest); :class:`BodyLimitMiddleware`
guards every other route (JSON bodies parsed by FastAPI). Both answer **413** as soon as the
``Content-Length`` header or the bytes received so far exceed the limit, holding at most the limit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    """413: the request body is over the limit (``declared``: its Content-Length, when that said so)."""

    def __init__(self, limit_bytes: int, declared: int | None = None) -> None:
        said = f" (Content-Length: {declared})" if declared is not None else ""
        super().__init__(413, f"request body over the {_size(limit_bytes)} limit{said}")
        self.limit_bytes = limit_bytes


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The request body, read chunk by chunk; refused once it exceeds ``limit_bytes``.

    Raises:
        BodyTooLarge: the Content-Length header or the body streamed so far is over the limit.
        HTTPException: 400 when the Content-Length header is not a number.
    """
    declared = _content_length(request.headers.get("content-length"))
    if declared is not None and declared > limit_bytes:
        raise BodyTooLarge(limit_bytes, declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimitMiddleware:
    """Pure ASGI middleware: any HTTP request over ``limit_bytes`` gets 413 ``{"detail": ...}``.

    Args:
        app: the application.
        limit_bytes: largest body accepted.
        exempt_paths: paths that read and limit their bodies themselves (exact match).
        on_refused: called with the path and the reason of each refusal (e.g. to count it in metrics).

    ``refused`` counts the requests refused (413 and malformed Content-Length).
    """

    def __init__(
        self,
        app: ASGIApp,
        limit_bytes: int,
        exempt_paths: Collection[str] = ("/api/v1/ingest",),
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.exempt_paths = frozenset(exempt_paths)
        self.on_refused = on_refused
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        try:
            declared = _content_length(_text(headers.get(b"content-length")))
            if declared is not None and declared > self.limit_bytes:
                raise BodyTooLarge(self.limit_bytes, declared)
        except HTTPException as exc:
            await _answer(send, exc.status_code, str(self._refusal(scope, exc).detail))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise self._refusal(scope, BodyTooLarge(self.limit_bytes))
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge as exc:  # the app let it through (FastAPI answers it itself): answer here
            if started:
                raise
            await _answer(send, exc.status_code, str(exc.detail))

    def _refusal(self, scope: Scope, exc: HTTPException) -> HTTPException:
        """Count and log one refused request; returns ``exc`` (to raise or answer)."""
        self.refused += 1
        path = str(scope.get("path"))
        log.warning("%s %s refused: %s", scope.get("method"), path, exc.detail)
        if self.on_refused is not None:
            self.on_refused(path, str(exc.detail))
        return exc


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise HTTPException(400, f"Content-Length {value[:40]!r} is not a byte count")
    return size


def _text(value: Any) -> str | None:
    return None if value is None else bytes(value).decode("latin-1")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} bytes"
