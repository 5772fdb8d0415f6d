"""/api/v1/analysis: topology, compare, bursts, drill-down, backtest and saved signatures.

Bodies and answers are the pydantic models of :mod:`cloudtap.server.analyse`; ``metric`` takes the edge
metrics and the request metrics (``latency_p99``..., read from the request rollups). Bad input answers 422
with ``detail[0].loc`` naming the field (and ``ctx.allowed`` when there is a list); an unknown saved
signature answers 404. Names come from ``app.state.names`` (an inventory's NameResolver) when set.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.server.access.permissions import Permission
from cloudtap.server.analyse import (
    BacktestRequest,
    BacktestResult,
    BurstRequest,
    BurstResult,
    CompareRequest,
    CompareResult,
    DrillRequest,
    DrillResult,
    Signature,
    SignatureStore,
    Topology,
    TopologyRequest,
    backtest,
    compare,
    detect_bursts,
    drill,
    topology,
)
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.api.deps import StoreDep, get_names
from cloudtap.server.api.guard import require, scope_of
from cloudtap.server.api.routes._errors import BAD_JSON, INVALID, ValidationErrorOut, unprocessable_item
from cloudtap.server.query.errors import QueryError

router = APIRouter(prefix="/api/v1/analysis", tags=["analysis"])
_422: dict[int | str, dict[str, Any]] = {**BAD_JSON, **INVALID}
_404: dict[int | str, dict[str, Any]] = {404: {"model": ValidationErrorOut, "description": "no such saved signature"}}


class RunSignature(BaseModel):
    """Optional range of a saved signature's backtest (default: all history)."""

    model_config = ConfigDict(extra="forbid")

    time_from: str | int | float | None = None
    time_to: str | int | float | None = None
    limit: int = Field(1000, ge=1, le=100_000, description="occurrences listed (the count covers all)")


def _names(request: Request) -> NameResolver:
    return get_names(request) or NoNames()  # type: ignore[no-any-return]


def _shared(request: Request) -> None:
    """Saved signatures are shared by every project: a project-bound caller may not list, read, run or
    change them (their filters name other projects' VMs). Inline backtests stay open to them."""
    if scope_of(request).projects is not None:
        raise HTTPException(403, "saved signatures are shared across projects: they need flows:read on every project")


def _unprocessable(exc: QueryError) -> HTTPException:
    detail = unprocessable_item("body", exc.field, exc.message, exc.allowed)
    status = 404 if isinstance(exc, AnalysisError) and exc.message.startswith("no saved signature") else 422
    return HTTPException(status_code=status, detail=[detail])


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except QueryError as exc:
        raise _unprocessable(exc) from exc


@router.post("/topology", dependencies=[Depends(require(Permission.FLOWS_READ))], responses=_422, summary="Nodes and edges at a level")
def topology_route(body: TopologyRequest, request: Request, store: StoreDep) -> Topology:
    """Client -> server edges grouped at ip / subnet / vm / host / project, with their traffic and health;
    with a request ``metric``, client -> server service edges with requests, errors and latencies (ms)."""
    return _call(topology, store, body, _names(request))  # type: ignore[no-any-return]


@router.post("/compare", dependencies=[Depends(require(Permission.FLOWS_READ))], responses=_422, summary="Window vs baseline")
def compare_route(body: CompareRequest, request: Request, store: StoreDep) -> CompareResult:
    """Edges and endpoints ranked by change (absolute, relative, robust z), new and vanished edges, bursts."""
    return _call(compare, store, body, _names(request))  # type: ignore[no-any-return]


@router.post("/bursts", dependencies=[Depends(require(Permission.FLOWS_READ))], responses=_422, summary="Burst intervals of a series")
def bursts_route(body: BurstRequest, request: Request, store: StoreDep) -> BurstResult:
    """Runs of buckets whose robust z-score (median / MAD) exceeds k."""
    return _call(detect_bursts, store, body, _names(request))  # type: ignore[no-any-return]


@router.post("/drill", dependencies=[Depends(require(Permission.FLOWS_READ))], responses=_422, summary="Drill into an edge, IP or VM")
def drill_route(body: DrillRequest, request: Request, store: StoreDep) -> DrillResult:
    """Composition by peer, port, protocol, close type, direction; one-way pushes; failed handshakes;
    requests by role, slowest statements / paths (by the request ``metric``) and error codes."""
    return _call(drill, store, body, _names(request))  # type: ignore[no-any-return]


@router.post("/backtest", dependencies=[Depends(require(Permission.FLOWS_READ))], responses={**_404, **_422}, summary="Scan history for a signature")
def backtest_route(body: BacktestRequest, request: Request, store: StoreDep) -> BacktestResult:
    """Occurrences, count and periodicity of an inline or saved signature."""
    if (body.signature is None) == (body.name is None):
        raise _unprocessable(AnalysisError("give signature or name (of a saved one)", "signature"))
    if body.name is not None:
        _shared(request)
    sig = body.signature or _call(SignatureStore(store).get, body.name)
    return _call(backtest, store, sig, body.time_from, body.time_to, _names(request), body.limit,  # type: ignore[no-any-return]
                 body.dedup)  # fmt: skip


@router.get("/signatures", dependencies=[Depends(require(Permission.FLOWS_READ))], summary="Saved signatures")
def list_signatures(request: Request, store: StoreDep) -> list[Signature]:
    """Every saved signature."""
    _shared(request)
    return _call(SignatureStore(store).list)  # type: ignore[no-any-return]


@router.put("/signatures/{name}", dependencies=[Depends(require(Permission.SIGNATURES_WRITE))], responses=_422, summary="Save a signature")
def save_signature(name: str, body: Signature, request: Request, store: StoreDep) -> Signature:
    """Save (or replace) ``name``; the body's name, when given, must match."""
    _shared(request)
    if body.name not in (None, name):
        raise _unprocessable(AnalysisError(f"body name {body.name!r} differs from the path's {name!r}", "name"))
    try:
        sig = Signature.model_validate({**body.model_dump(), "name": name})
    except ValueError as exc:
        raise _unprocessable(AnalysisError(str(exc).splitlines()[-1].strip(), "name")) from None
    return _call(SignatureStore(store).save, sig)  # type: ignore[no-any-return]


@router.get("/signatures/{name}", dependencies=[Depends(require(Permission.FLOWS_READ))], responses={**_404, **INVALID}, summary="A saved signature")
def get_signature(name: str, request: Request, store: StoreDep) -> Signature:
    """The signature ``name``."""
    _shared(request)
    return _call(SignatureStore(store).get, name)  # type: ignore[no-any-return]


@router.delete("/signatures/{name}", dependencies=[Depends(require(Permission.SIGNATURES_WRITE))], status_code=204, responses={**_404, **INVALID},
               summary="Delete a signature")  # fmt: skip
def delete_signature(name: str, request: Request, store: StoreDep) -> None:
    """Forget ``name``."""
    _shared(request)
    _call(SignatureStore(store).delete, name)


@router.post("/signatures/{name}/run", dependencies=[Depends(require(Permission.FLOWS_READ))], responses={**_404, **_422},
             summary="Backtest a saved signature")  # fmt: skip
def run_signature(name: str, request: Request, store: StoreDep, body: RunSignature | None = None) -> BacktestResult:
    """Backtest ``name`` over history (or the given range)."""
    _shared(request)
    run = body or RunSignature()
    sig = _call(SignatureStore(store).get, name)
    return _call(backtest, store, sig, run.time_from, run.time_to, _names(request), run.limit)  # type: ignore[no-any-return]
