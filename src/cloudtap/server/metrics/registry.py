"""The app's metrics registry: one ``CollectorRegistry`` per app (never the global default one).

:func:`install_metrics` is called by ``create_app`` (before the app serves: it adds the HTTP middleware);
``GET /metrics`` renders :func:`registry_of`. Every family is listed in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from cloudtap.server.metrics.base import AppCollector, counter, gauge
from cloudtap.server.metrics.controller import ControllerCollector
from cloudtap.server.metrics.findings import FindingsCollector
from cloudtap.server.metrics.http import HttpMetrics, HttpMetricsMiddleware
from cloudtap.server.metrics.ingest import IngestCollector
from cloudtap.server.metrics.inventory import InventoryCollector
from cloudtap.server.metrics.storage import StorageCollector

COLLECTORS: tuple[type[AppCollector], ...] = (IngestCollector, StorageCollector, ControllerCollector,
                                               InventoryCollector, FindingsCollector)  # fmt: skip


class ServerCollector(AppCollector):
    """``cloudtap_server_info`` and the collectors' own failures."""

    name = "server"

    def __init__(self, app: Any, collectors: list[AppCollector]) -> None:
        super().__init__(app)
        self.collectors = collectors

    def families(self) -> Iterator[Metric]:
        from cloudtap import __version__

        info = gauge("cloudtap_server_info", "1, labelled with the server's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        errors = counter("cloudtap_server_metrics_collector_errors", "scrapes where a collector failed (its "
                         "families were left out)", labels=["collector"])  # fmt: skip
        for c in self.collectors:
            errors.add_metric([c.name], c.errors)
        yield errors


def _registry(app: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    collectors = [cls(app) for cls in COLLECTORS]
    for c in collectors:
        registry.register(c)
    registry.register(ServerCollector(app, collectors))
    app.state.metrics_registry = registry
    return registry


def install_metrics(app: Any) -> CollectorRegistry:
    """Give ``app`` its registry and the HTTP metrics middleware (once; call before the app serves)."""
    found: CollectorRegistry | None = getattr(app.state, "metrics_registry", None)
    if found is not None and getattr(app.state, "http_metrics", None) is not None:
        return found
    registry = found or _registry(app)
    http = HttpMetrics(registry)
    app.add_middleware(HttpMetricsMiddleware, metrics=http)  # outermost: it sees every answer, 413s included
    app.state.http_metrics = http
    return registry


def registry_of(app: Any) -> CollectorRegistry:
    """The app's registry (without HTTP metrics when :func:`install_metrics` was not called)."""
    found: CollectorRegistry | None = getattr(app.state, "metrics_registry", None)
    return found if found is not None else _registry(app)
