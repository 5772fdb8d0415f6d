"""GET /api/v1/health (public liveness), /api/v1/ingest/stats and /metrics (counters, metrics:read)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from cloudtap.server.access.permissions import PUBLIC, Permission
from cloudtap.server.api.guard import require
from cloudtap.server.metrics import registry_of

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
    throttled_batches: int = 0  #: answered 429 (queue full): not rejected, resent later
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
        throttled_batches=getattr(stats, "throttled", 0),
        rows=stats.rows,
    )


@router.get("/metrics", dependencies=[Depends(require(Permission.METRICS_READ))], include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics of the server (fleet-wide: ``metrics:read`` on every project; docs/metrics.md)."""
    return Response(generate_latest(registry_of(request.app)), media_type=CONTENT_TYPE_LATEST)
