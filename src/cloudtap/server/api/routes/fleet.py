"""Fleet monitoring API: top agents, hosts by load, stale agents, and "why is there no data for VM X?".

Every route needs ``fleet:read``. A bad ``by`` or ``window`` is a 422 in FastAPI's shape (``loc`` names the
parameter, ``ctx.allowed`` the accepted values).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from cloudtap.server.access.permissions import Permission
from cloudtap.server.api.guard import require, scope_of
from cloudtap.server.api.routes._controller_app import FORBIDDEN
from cloudtap.server.api.routes._errors import INVALID
from cloudtap.server.api.routes.controller import CheckedRoute, ctl_of, invalid
from cloudtap.server.controller.diagnose import diagnose_vm as run_diagnosis
from cloudtap.server.controller.diagnose_query import StoreLookup
from cloudtap.server.controller.diagnose_storage import server_side
from cloudtap.server.controller.fleet import WINDOWS, window_seconds

router = APIRouter(prefix="/api/v1", tags=["fleet"], route_class=CheckedRoute)
READ = [Depends(require(Permission.FLEET_READ))]

UNKNOWN_VM: dict[int | str, dict[str, Any]] = {
    404: {"description": "no VM of that name or key in the caller's projects (project-bound callers)"},
}

Metric = Literal["cpu", "memory", "bps", "pps", "shipped_bps", "forwarded_bps", "forward_drops", "drops", "load"]
Window = Annotated[str, Query(description="1m, 5m, 1h or seconds (e.g. 90 or 90s)")]


def _window(window: str) -> str:
    """``window`` when it is readable, else a 422 naming it."""
    try:
        window_seconds(window)
    except ValueError as exc:
        raise invalid("query", "window", str(exc), list(WINDOWS)) from None
    return window


@router.get("/fleet/top", dependencies=READ, responses={**FORBIDDEN, **INVALID})
def top(
    request: Request,
    by: Annotated[Metric, Query(description="the figure to rank by")] = "cpu",
    window: Window = "1m",
    limit: Annotated[int, Query(ge=1, le=100000)] = 20,
) -> list[dict[str, Any]]:
    """Agents ranked by a figure over the window (rates from counter deltas, CPU averaged, memory max)."""
    return ctl_of(request).fleet.top(by, _window(window), limit)


@router.get("/fleet/hosts", dependencies=READ, responses={**FORBIDDEN, **INVALID})
def hosts(request: Request, window: Window = "1m", limit: Annotated[int, Query(ge=1, le=100000)] = 50) -> list[dict[str, Any]]:
    """Hosts by load (1-min load average over the window) with their agents."""
    return ctl_of(request).fleet.hosts(_window(window), limit)


@router.get("/fleet/stale", dependencies=READ, responses=FORBIDDEN)
def stale(request: Request) -> list[dict[str, Any]]:
    """Agents without a heartbeat for ``controller.stale_after`` periods."""
    return ctl_of(request).fleet.stale()


@router.get("/diagnose/vm/{name}", dependencies=READ, responses={**FORBIDDEN, **INVALID, **UNKNOWN_VM})
def diagnose_vm(request: Request, name: str) -> dict[str, Any]:
    """Walk inventory -> host -> agent -> alive -> capture -> policy -> interface -> drops -> limits ->
    rejected -> backpressure -> retention -> ingest -> vm_traffic -> tagging and name the first broken link,
    with what to do (``name``: the VM's name or key). A project-bound caller asks only about VMs of its
    projects (404 otherwise, the same answer as for a VM that does not exist); the store is asked only about
    that VM's agent and addresses."""
    projects = scope_of(request).projects
    if projects is not None:
        from cloudtap.inventory.visibility import visible
        from cloudtap.server.api.routes.inventory import install

        install(request.app)
        source = getattr(request.app.state, "inventory", None)
        snapshot = source.current() if source is not None else None
        known = {n for v in visible(snapshot, projects).vms for n in (v.name, v.key)} if snapshot else set()
        if name not in known:
            raise HTTPException(404, f"no VM named {name!r} in your projects")
    ctl = ctl_of(request)
    lookup = StoreLookup(ctl.store, ctl.database) if ctl.store is not None else None
    server = server_side(request.app.state, lookup)
    return run_diagnosis(name, ctl.inventory(), ctl.fleet, ctl.compilation, lookup, server=server).as_dict()
