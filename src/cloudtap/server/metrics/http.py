"""HTTP metrics: requests, latency and bytes by route template, measured by a pure ASGI middleware.

The ``route`` label is the matched route's template (``/api/v1/agents/{agent_id}/heartbeat``), never the
raw path: its cardinality is the number of routes. Requests no route matched (404s, bodies refused
before routing) share ``route="unmatched"``. Queries, analyses and PCAP retrievals are these metrics
for their routes (docs/metrics.md).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudtap.server.metrics.distribution import LATENCY_BUCKETS

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """The HTTP metric families of one app (registered on its registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["method", "route"]
        self.requests = Counter(
            "cloudtap_server_http_requests", "HTTP requests answered, by route template and status class",
            [*labels, "code"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "cloudtap_server_http_request_duration_seconds",
            "time from the request to the last byte of its answer, by route template",
            labels, buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.request_bytes = Counter(
            "cloudtap_server_http_request_bytes", "request body bytes received, by route template", labels,
            registry=registry,
        )  # fmt: skip
        self.response_bytes = Counter(
            "cloudtap_server_http_response_bytes", "response body bytes sent, by route template", labels,
            registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge("cloudtap_server_http_requests_in_flight", "requests being served now",
                               registry=registry)  # fmt: skip

    def record(self, method: str, route: str, status: int, seconds: float, received: int, sent: int) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, f"{status // 100}xx").inc()
        self.duration.labels(method, route).observe(seconds)
        if received:
            self.request_bytes.labels(method, route).inc(received)
        if sent:
            self.response_bytes.labels(method, route).inc(sent)


def route_template(scope: Scope) -> str:
    """The matched route's full path template, else ``unmatched``.

    A route of a nested router knows its template without the outer prefixes (FastAPI includes routers
    lazily): the prefix is the literal start of the path that the route's own pattern leaves over.
    """
    route: Any = scope.get("route")
    template = getattr(route, "path", None) or getattr(route, "path_format", None)
    if not template:
        return UNMATCHED
    regex = getattr(route, "path_regex", None)
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    if regex is None or regex.match(path):
        return str(template)
    for i in range(1, len(path)):
        if path[i] == "/" and regex.match(path[i:]):
            return path[:i] + str(template)
    return str(template)


class HttpMetricsMiddleware:
    """Times every HTTP request to its last response byte; counts bodies; 500 when the app raised.

    Args:
        app: the application.
        metrics: where to record (:class:`HttpMetrics`).
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, received, sent = 500, 0, 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, counting_receive, watching_send)
        finally:
            self.metrics.in_flight.dec()
            method = str(scope.get("method", "GET"))
            method = method if method in METHODS else "other"  # bounded: a client may send any word
            self.metrics.record(method, route_template(scope), status, time.perf_counter() - started, received, sent)
