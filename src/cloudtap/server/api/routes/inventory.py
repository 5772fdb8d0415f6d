"""/api/v1/inventory: entities (now or at a time), history, names, connector status, on-demand sync, and
where the agents disagree with the cloud inventory.

The router's lifespan builds the inventory service (``app.state.inventory``, ``.names``,
``.inventory_service``; the ingest tagger) from ``settings.inventory`` and runs the periodic syncs.
Routes build it on first use when the app runs without lifespan (tests).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi import Query as Param

from cloudtap.inventory.connectors.agents import NAME as AGENTS
from cloudtap.inventory.connectors.agents import seen_addresses, snapshot_from_agents
from cloudtap.inventory.disagreements import KINDS, Kind, compare, visible_to
from cloudtap.inventory.entities import KIND_SPECS
from cloudtap.inventory.model import Snapshot
from cloudtap.inventory.service import InventoryService, build_service
from cloudtap.inventory.view import build_view
from cloudtap.inventory.visibility import visible
from cloudtap.server.access.permissions import Permission
from cloudtap.server.api.guard import require, scope_of

MAX_ITEMS = 100_000


def install(app: FastAPI) -> InventoryService | None:
    """Build the app's inventory service once and wire it (state, ingest tagger); ``None`` when disabled."""
    service = getattr(app.state, "inventory_service", None)
    if service is not None:
        return service  # type: ignore[no-any-return]
    settings = app.state.settings
    if not settings.inventory.enabled:
        return None
    fallback = getattr(getattr(settings, "controller", None), "inventory_file", None)
    service = build_service(settings.inventory, getattr(app.state, "store", None), static_fallback=fallback)
    app.state.inventory_service = service
    app.state.inventory = service.inventory
    app.state.names = service.names
    ingestor = getattr(app.state, "ingestor", None)
    if ingestor is not None:
        ingestor.tagger = service.tagger
    return service


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service = install(app)
    if service is not None:
        service.start()
    try:
        yield
    finally:
        if service is not None:
            service.stop()


router = APIRouter(
    prefix="/api/v1/inventory",
    tags=["inventory"],
    lifespan=lifespan,
    responses={503: {"description": "the inventory is disabled"}},
)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    400: {"description": "a parameter that cannot be read (time, ids)"},
    404: {"description": "unknown kind, entity or connector"},
}


def _service(request: Request) -> InventoryService:
    service = install(request.app)
    if service is None:
        raise HTTPException(503, "the inventory is disabled (inventory.enabled: false)")
    return service


def _visible(request: Request, snapshot: Snapshot) -> Snapshot:
    """The snapshot cut to the caller's projects (unrestricted callers see it whole)."""
    scope = scope_of(request)
    return snapshot if scope.projects is None else visible(snapshot, scope.projects)


def _keys(request: Request, snapshot: Snapshot, kind: str) -> set[str] | None:
    """Keys of ``kind`` the caller may see (None: all)."""
    if scope_of(request).projects is None:
        return None
    return {e.key for e in getattr(_visible(request, snapshot), KIND_SPECS[kind][0])}


def _kind(kind: str) -> str:
    if kind not in KIND_SPECS:
        raise HTTPException(404, f"unknown inventory kind {kind!r}; expected one of {', '.join(KIND_SPECS)}")
    return kind


def _at(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    from cloudtap.server.query.errors import QueryError
    from cloudtap.server.query.timespec import parse_instant

    try:
        ns = parse_instant(value, time.time_ns(), "at")
    except (QueryError, ValueError, OverflowError) as exc:
        raise HTTPException(400, str(exc)) from None
    if not -(2**63) <= ns < 2**63:
        raise HTTPException(400, f"at: {value!r} is out of range")
    return ns


@router.get("/status", dependencies=[Depends(require(Permission.INVENTORY_READ))])
def status(request: Request) -> dict[str, Any]:
    """Connectors (last success, last error, last change summary), sources, counts, tagging counters."""
    svc = _service(request)
    snap = _visible(request, svc.inventory.current())
    if scope_of(request).projects is not None:  # connectors and tagging counters are fleet-wide
        return {"counts": {kind: len(getattr(snap, attr)) for kind, (attr, _) in KIND_SPECS.items()}}
    return {
        "connectors": [s.as_dict() for s in svc.syncer.status()],
        "sources": svc.inventory.sources(),
        "revision": svc.inventory.revision,
        "counts": {kind: len(getattr(snap, attr)) for kind, (attr, _) in KIND_SPECS.items()},
        "tagging": vars(svc.tagger.stats),
        "sync_period_s": svc.syncer.period_s,
    }


@router.post("/sync", dependencies=[Depends(require(Permission.INVENTORY_SYNC))], responses=_NOT_FOUND)
def sync(request: Request, connector: Annotated[str | None, Param(description="one connector (default: all)")] = None) -> dict[str, Any]:
    """Sync now (all connectors or one) and answer with each one's change summary or error."""
    svc = _service(request)
    try:
        results = svc.syncer.sync(connector or None)
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0])) from None
    return {
        "results": [
            {"connector": r.name, "ok": r.error is None, "error": r.error,
             "summary": r.summary.as_dict() if r.summary is not None else None}
            for r in results
        ]
    }  # fmt: skip


def _agent_reports(request: Request) -> list[dict[str, Any]]:
    """What each registered agent's latest heartbeat teaches the inventory, oldest first."""
    from cloudtap.server.api.routes._controller_app import get_controller_app
    from cloudtap.server.api.routes.agents import agent_inventory_report

    ctl = get_controller_app(request.app)
    latest = [(last.at, rec, last.report) for rec in ctl.registry.all() if (last := ctl.heartbeats.latest(rec.id))]
    return [agent_inventory_report(rec, report) for _, rec, report in sorted(latest, key=lambda t: t[0])]


@router.get("/disagreements", dependencies=[Depends(require(Permission.INVENTORY_READ))])
def disagreements(
    request: Request,
    kind: Annotated[Kind | None, Param(description="only this kind")] = None,
    limit: Annotated[int, Param(ge=1, le=MAX_ITEMS)] = 1000,
) -> dict[str, Any]:
    """What the agents see that the cloud inventory lacks or contradicts: VMs it does not know, VMs on
    another host or project, NICs and IPs its ports do not list (empty without a cloud source)."""
    import dataclasses

    svc = _service(request)
    reports = _agent_reports(request)
    records = [r for r in svc.inventory.records() if r.is_open and r.source != AGENTS]
    reference = build_view(records, None, svc.inventory.priority).snapshot
    observed = snapshot_from_agents(reports)
    items = compare(observed, reference, seen_addresses(reports)) if records else []
    projects = scope_of(request).projects
    if projects is not None:
        items = visible_to(items, projects, (observed, reference))
    counts = {k: sum(1 for d in items if d.kind == k) for k in KINDS}
    items = [d for d in items if kind is None or d.kind == kind]
    answer = {"counts": counts, "total": len(items), "items": [dataclasses.asdict(d) for d in items[:limit]]}
    if projects is None:  # how many agents and which sources: fleet-wide facts
        answer.update({"reference_sources": sorted({r.source for r in records}), "agents": len(reports)})
    return answer


@router.get("/{kind}/history", dependencies=[Depends(require(Permission.INVENTORY_READ))], responses=_NOT_FOUND)
def history(
    request: Request, kind: str, key: Annotated[str, Param(description="the entity's key")]
) -> dict[str, Any]:
    """Every validity interval of one entity (all sources), oldest first."""
    svc = _service(request)
    records = svc.inventory.history(_kind(kind), key)
    allowed = _keys(request, svc.inventory.current(), kind)
    if allowed is not None and key not in allowed:
        records = []
    if not records:
        raise HTTPException(404, f"no {kind} with key {key!r} in the inventory history")
    return {"kind": kind, "key": key, "intervals": [r.as_dict() for r in records]}


@router.get("/{kind}/names", dependencies=[Depends(require(Permission.INVENTORY_READ))], responses=_NOT_FOUND)
def names(
    request: Request,
    kind: str,
    ids: Annotated[str, Param(description="comma-separated ids")],
    at: Annotated[str | None, Param(description="time (ISO 8601, epoch, -1h); default now")] = None,
) -> dict[str, str]:
    """Names of ids as they were at ``at``."""
    svc = _service(request)
    try:
        wanted = [int(x) for x in ids.split(",") if x.strip()]
    except ValueError:
        raise HTTPException(400, "ids: comma-separated integers") from None
    found = svc.names.names(_kind(kind), wanted, _at(at))
    if scope_of(request).projects is not None:
        view = svc.inventory.view(_at(at))
        keys = _keys(request, view.snapshot, kind) or set()
        seen = {view.id_of(kind, k) for k in keys}
        found = {k: v for k, v in found.items() if k in seen}
    return {str(k): v for k, v in found.items()}


@router.get("/{kind}", dependencies=[Depends(require(Permission.INVENTORY_READ))], responses=_NOT_FOUND)
def list_kind(
    request: Request,
    kind: str,
    at: Annotated[str | None, Param(description="time (ISO 8601, epoch, -1h); default now")] = None,
    name: Annotated[str | None, Param(description="name filter (* globs)")] = None,
    limit: Annotated[int, Param(ge=1, le=MAX_ITEMS)] = 1000,
) -> dict[str, Any]:
    """Entities of one kind (merged over sources) now or at ``at``, with their ids and sources."""
    import dataclasses
    import fnmatch

    svc = _service(request)
    view = svc.inventory.view(_at(at))
    items = []
    for entity in getattr(_visible(request, view.snapshot), KIND_SPECS[_kind(kind)][0]):
        label = getattr(entity, "name", None) or getattr(entity, "mac", "")
        if name is not None and not fnmatch.fnmatchcase(str(label), name):
            continue
        items.append({"id": view.id_of(kind, entity.key), "source": view.sources.get((kind, entity.key), ""),
                      **dataclasses.asdict(entity)})  # fmt: skip
    return {"kind": kind, "at": view.at, "total": len(items), "items": items[:limit]}
