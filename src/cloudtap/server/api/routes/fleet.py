"""Fleet monitoring API: top agents, hosts by load, stale agents, and "why is there no data for VM X?"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from cloudtap.server.api.routes.controller import ctl_of

router = APIRouter(prefix="/api/v1", tags=["fleet"])


@router.get("/fleet/top")
def top(
    request: Request,
    by: Annotated[str, Query(description="cpu, memory, bps, pps, shipped_bps, drops, load")] = "cpu",
    window: Annotated[str, Query(description="1m, 5m, 1h or seconds")] = "1m",
    limit: Annotated[int, Query(ge=1, le=100000)] = 20,
) -> list[dict[str, Any]]:
    """Agents ranked by a figure over the window (rates from counter deltas, CPU averaged, memory max)."""
    try:
        return ctl_of(request).fleet.top(by, window, limit)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.get("/fleet/hosts")
def hosts(request: Request, window: str = "1m", limit: Annotated[int, Query(ge=1, le=100000)] = 50) -> list[dict[str, Any]]:
    """Hosts by load (1-min load average over the window) with their agents."""
    try:
        return ctl_of(request).fleet.hosts(window, limit)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.get("/fleet/stale")
def stale(request: Request) -> list[dict[str, Any]]:
    """Agents without a heartbeat for ``controller.stale_after`` periods."""
    return ctl_of(request).fleet.stale()


@router.get("/diagnose/vm/{name}")
def diagnose_vm(request: Request, name: str) -> dict[str, Any]:
    """Walk inventory -> host -> agent -> alive -> capture -> policy -> interface -> drops -> ingest and name
    the first broken link."""
    return ctl_of(request).diagnose_vm(name)
