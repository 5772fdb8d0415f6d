"""A tiny threaded JSON HTTP server on a free loopback port, the base of the cloud API stubs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: A route handler: (method, path, query, headers, body) -> (status, json body, extra headers).
Reply = tuple[int, Any, dict[str, str]]


class JsonStub:
    """Serves ``self.handle`` on 127.0.0.1:<free port> in a daemon thread; records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "stub not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> Reply:
        raise NotImplementedError

    def start(self) -> JsonStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                stub.requests.append((self.command, parts.path))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, extra = stub.handle(
                    self.command, parts.path, parse_qs(parts.query), headers, body
                )
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name=type(self).__name__
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> JsonStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def route(table: dict[str, Callable[..., Reply]], path: str) -> Callable[..., Reply] | None:
    """The handler registered for ``path`` (exact match, trailing slash ignored)."""
    return table.get(path.rstrip("/") or "/")
