"""Request bodies are refused (413) as they stream in: never buffered past the limit, endless ones included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from cloudtap.server.api.body_limit import BodyLimitMiddleware, BodyTooLarge, read_body

LIMIT = 1024
CHUNK = 256


class Sender:
    """An ASGI client that streams ``chunks`` (endless when it is an iterator) and records what it sent."""

    def __init__(self, chunks: Iterator[bytes] | list[bytes]) -> None:
        self.chunks = iter(chunks)
        self.sent = 0
        self.answer: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        chunk = next(self.chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: dict[str, Any]) -> None:
        self.answer.append(message)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.answer if m["type"] == "http.response.start"))

    @property
    def json(self) -> Any:
        return json.loads(
            b"".join(m.get("body", b"") for m in self.answer if m["type"] == "http.response.body")
        )


def call(
    app: Any, path: str, chunks: Iterator[bytes] | list[bytes], length: int | str | None = None
) -> Sender:
    """POST ``chunks`` to ``path`` (``Content-Length: length`` when given, else chunked)."""
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("t", 80)}  # fmt: skip
    sender = Sender(chunks)
    asyncio.run(app(scope, sender.receive, sender.send))
    return sender


def endless() -> Iterator[bytes]:
    while True:
        yield b"x" * CHUNK


# --- read_body: routes that read their own body (ingest) ---------------------------------------------


def reader_app() -> FastAPI:
    app = FastAPI()

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await read_body(request, LIMIT))}

    return app


def test_read_body_returns_a_body_within_the_limit() -> None:
    answer = call(reader_app(), "/raw", [b"a" * 600, b"b" * 424], length=LIMIT)
    assert answer.status == 200 and answer.json == {"bytes": LIMIT}


def test_read_body_refuses_a_large_content_length_before_reading() -> None:
    answer = call(reader_app(), "/raw", endless(), length=10 << 30)  # announces 10 GiB
    assert answer.status == 413 and answer.sent == 0
    assert answer.json["detail"] == "request body over the 1024 bytes limit (Content-Length: 10737418240)"


def test_read_body_stops_an_endless_body_at_the_limit() -> None:
    """Chunked, without Content-Length, never ending: request.body() would buffer until memory runs out."""
    answer = call(reader_app(), "/raw", endless())
    assert answer.status == 413 and "over the 1024 bytes limit" in answer.json["detail"]
    assert LIMIT < answer.sent <= LIMIT + CHUNK  # read one chunk past the limit, kept none of it


def test_read_body_refuses_a_body_longer_than_its_content_length() -> None:
    answer = call(reader_app(), "/raw", endless(), length=100)
    assert answer.status == 413 and answer.sent <= LIMIT + CHUNK


def test_read_body_refuses_a_malformed_content_length() -> None:
    answer = call(reader_app(), "/raw", [b"{}"], length="-5")
    assert answer.status == 400 and answer.sent == 0
    assert answer.json["detail"] == "Content-Length '-5' is not a byte count"


def test_body_too_large_is_an_http_413() -> None:
    exc = BodyTooLarge(64 << 20, 70_000_000)
    assert (
        exc.status_code == 413
        and exc.detail == "request body over the 64 MiB limit (Content-Length: 70000000)"
    )


# --- BodyLimitMiddleware: every other route ----------------------------------------------------------


class Note(BaseModel):
    text: str


def guarded_app(refusals: list[tuple[str, str]] | None = None) -> tuple[FastAPI, list[str]]:
    """A JSON route, and an exempt route that reads its own body; ``calls`` lists the handlers that ran."""
    app = FastAPI()
    calls: list[str] = []

    @app.post("/notes")
    async def notes(note: Note) -> dict[str, int]:
        calls.append("notes")
        return {"length": len(note.text)}

    @app.post("/api/v1/ingest")
    async def ingest(request: Request) -> dict[str, int]:
        calls.append("ingest")
        return {"bytes": len(await request.body())}

    on_refused = None if refusals is None else lambda path, why: refusals.append((path, why))
    app.add_middleware(BodyLimitMiddleware, limit_bytes=LIMIT, on_refused=on_refused)
    return app, calls


def note(size: int) -> bytes:
    return json.dumps({"text": "n" * size}).encode()


def test_middleware_lets_small_json_through() -> None:
    app, calls = guarded_app()
    body = note(100)
    answer = call(app, "/notes", [body], length=len(body))
    assert answer.status == 200 and answer.json == {"length": 100} and calls == ["notes"]


def test_middleware_refuses_a_large_content_length_without_calling_the_route() -> None:
    refusals: list[tuple[str, str]] = []
    app, calls = guarded_app(refusals)
    body = note(5000)
    answer = call(app, "/notes", [body], length=len(body))
    assert answer.status == 413 and answer.sent == 0 and calls == []
    assert answer.json == {"detail": f"request body over the 1024 bytes limit (Content-Length: {len(body)})"}
    assert refusals == [("/notes", answer.json["detail"])]


@pytest.mark.parametrize("length", [None, 200])  # chunked, or a Content-Length that lies
def test_middleware_stops_a_streamed_body_at_the_limit(length: int | None) -> None:
    refusals: list[tuple[str, str]] = []
    app, calls = guarded_app(refusals)
    answer = call(app, "/notes", endless(), length=length)
    assert answer.status == 413 and answer.json == {"detail": "request body over the 1024 bytes limit"}
    assert LIMIT < answer.sent <= LIMIT + CHUNK and calls == [] and len(refusals) == 1


def test_middleware_leaves_exempt_paths_to_their_route() -> None:
    app, calls = guarded_app()
    answer = call(app, "/api/v1/ingest", [b"z" * 3000], length=3000)
    assert answer.status == 200 and answer.json == {"bytes": 3000} and calls == ["ingest"]


def test_middleware_answers_when_the_app_does_not() -> None:
    """A bare ASGI app that lets the refusal escape still gets a 413 JSON answer, counted."""

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass

    guard = BodyLimitMiddleware(bare, LIMIT)
    answer = call(guard, "/anything", endless())
    assert answer.status == 413 and "over the 1024 bytes limit" in answer.json["detail"]
    assert guard.refused == 1
