"""/api/v1/audit: the audit log (admins): who pulled which packets, who changed what, failed logins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Query as Param

from cloudtap.server.access.permissions import Permission
from cloudtap.server.api.guard import require
from cloudtap.server.api.routes._errors import INVALID
from cloudtap.server.audit import audit_of
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.timespec import parse_instant

router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit", dependencies=[Depends(require(Permission.AUDIT_READ))], responses=INVALID)
def audit(
    request: Request,
    since: Annotated[str | None, Param(description="ISO 8601, epoch or relative (-1h)")] = None,
    action: Annotated[str | None, Param(description="pcap.retrieve, policy.put...; 'pcap.' for a family")] = None,
    actor: Annotated[str | None, Param(description="who did it")] = None,
    limit: Annotated[int, Param(ge=1, le=100_000)] = 1000,
) -> list[dict[str, Any]]:
    """Audit records, oldest first (the newest ``limit``)."""
    import time

    since_ns = 0
    if since:
        try:
            since_ns = parse_instant(since, time.time_ns(), "since")
        except QueryError as exc:
            raise HTTPException(422, [{"loc": ["query", "since"], "msg": str(exc), "type": "value_error"}]) from exc
    return audit_of(request.app).read(since_ns, action, actor, limit)
