"""GET /api/v1/health (public liveness), /api/v1/ingest/stats and /metrics (counters, metrics:read)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from pydantic import BaseModel

from cloudtap.server.access.permissions import PUBLIC, Permission
from cloudtap.server.api.guard import require

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Server liveness (public: it tells nothing about the traffic)."""

    status: str
    version: str
    storage: str


class IngestStats(BaseModel):
    """What the server has ingested since it started (all projects: global totals)."""

    ingested_batches: int
    duplicate_batches: int
    rejected_batches: int
    rejected_by_reason: dict[str, int]
    rows: dict[str, int]


@router.get("/api/v1/health", dependencies=[Depends(require(PUBLIC))], response_model=Health)
def health(request: Request) -> Health:
    """Liveness."""
    from cloudtap import __version__

    return Health(status="ok", version=__version__, storage=request.app.state.settings.storage.dsn.split("://", 1)[0])


@router.get("/api/v1/ingest/stats", dependencies=[Depends(require(Permission.METRICS_READ))],
            response_model=IngestStats)  # fmt: skip
def ingest_stats(request: Request) -> IngestStats:
    """Ingest counters: batches stored, duplicates, rejections (by reason), rows per stream."""
    stats = request.app.state.ingestor.stats
    return IngestStats(
        ingested_batches=stats.batches,
        duplicate_batches=stats.duplicates,
        rejected_batches=stats.rejected,
        rejected_by_reason=dict(getattr(stats, "rejected_by_reason", {}) or {}),
        rows=stats.rows,
    )


class _IngestCollector:
    def __init__(self, request_app: object) -> None:
        self.app = request_app

    def collect(self):  # type: ignore[no-untyped-def]
        stats = self.app.state.ingestor.stats  # type: ignore[attr-defined]
        batches = CounterMetricFamily("cloudtap_server_ingest_batches", "batches", labels=["result"])
        batches.add_metric(["stored"], stats.batches - stats.duplicates)
        batches.add_metric(["duplicate"], stats.duplicates)
        batches.add_metric(["rejected"], stats.rejected)
        yield batches
        rows = CounterMetricFamily("cloudtap_server_ingest_rows", "rows stored", labels=["kind"])
        for kind, n in stats.rows.items():
            rows.add_metric([kind], n)
        yield rows


@router.get("/metrics", dependencies=[Depends(require(Permission.METRICS_READ))], include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics of the server."""
    registry = getattr(request.app.state, "registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_IngestCollector(request.app))  # type: ignore[arg-type]
        request.app.state.registry = registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
