"""The server's Prometheus metrics (``GET /metrics``): a registry per app, collectors that read the app's
state at scrape time, and an ASGI middleware timing requests by route template. See docs/metrics.md."""

from cloudtap.server.metrics.distribution import Distribution
from cloudtap.server.metrics.registry import install_metrics, registry_of

__all__ = ["Distribution", "install_metrics", "registry_of"]
