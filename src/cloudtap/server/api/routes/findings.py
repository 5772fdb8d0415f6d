"""/api/v1/findings: what the findings engine reported, acknowledging and muting it, isolation rules.

Reading findings needs ``flows:read`` and is limited to the caller's projects inside the storage query
(a finding carries both ends' project ids). Acknowledging, muting and running the engine on a past
window need ``findings:write`` (operators); a project-bound operator acts only on findings it can see,
and may not run the engine (it writes every project's findings). Isolation rules are read with
``fleet:read`` and written with ``config:write``, by callers bound to no project (rules name projects).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cloudtap.server.access.permissions import Permission
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.window import resolve_window
from cloudtap.server.api.deps import PrincipalDep, ScopeDep
from cloudtap.server.api.guard import require, scope_of
from cloudtap.server.api.routes._errors import BAD_JSON, INVALID, ErrorText, unprocessable_item
from cloudtap.server.findings.engine import FindingsEngine
from cloudtap.server.findings.loop import engine_of, start_loop
from cloudtap.server.findings.model import KINDS, SEVERITIES, Action, Finding
from cloudtap.server.findings.rules import IsolationRule, RuleError

_DENIED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorText, "description": "not authenticated"},
    403: {"model": ErrorText, "description": "the caller lacks the permission, or is bound to projects"},
    503: {"model": ErrorText, "description": "the server has no ClickHouse store"},
}
_404: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorText, "description": "no such finding or rule (or not visible)"}
}
router = APIRouter(prefix="/api/v1/findings", tags=["findings"], responses={**_DENIED, **BAD_JSON, **INVALID})
NS = 1_000_000_000


def _names(app: FastAPI) -> Any:
    names = getattr(app.state, "names", None)
    if names is None:
        from cloudtap.server.api.routes.inventory import install

        install(app)
        names = getattr(app.state, "names", None)
    return names


def start(app: FastAPI) -> Any:
    """Start the findings loop for the app (called by the app's lifespan)."""
    return start_loop(app, names=lambda: _names(app))


def _engine(request: Request) -> FindingsEngine:
    engine = engine_of(request.app, names=lambda: _names(request.app))
    if engine is None:
        raise HTTPException(503, "findings need a ClickHouse store")
    return engine


def _unscoped(request: Request, what: str) -> None:
    if scope_of(request).projects is not None:
        raise HTTPException(403, f"{what} covers every project: it needs the permission on every project")


def _bad(field: str, message: str, allowed: list[str] | None = None) -> HTTPException:
    return HTTPException(422, [unprocessable_item("body", field, message, allowed)])


class FindingList(BaseModel):
    """Findings, newest first."""

    count: int
    findings: list[Finding]


class ActBody(BaseModel):
    """Why (and for a mute, until when)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=2000)
    until: str | int | float | None = Field(
        None, description="mute until (ISO 8601, epoch or +2h...); none = until unmuted"
    )


class RunBody(BaseModel):
    """A past window to run the engine on (whole minutes)."""

    model_config = ConfigDict(extra="forbid")

    time_from: str | int | float
    time_to: str | int | float | None = None


class RunResult(BaseModel):
    """What a run changed."""

    minutes: int
    new: int
    extended: int
    elapsed_s: float


# --- isolation rules (before /{finding_id}) ----------------------------------------------------------


@router.get(
    "/rules", dependencies=[Depends(require(Permission.FLEET_READ))], summary="Isolation rules in force"
)
def list_rules(request: Request) -> list[IsolationRule]:
    _unscoped(request, "the rule list")
    return _engine(request).rules.in_force()


@router.get("/rules/{name}/history", dependencies=[Depends(require(Permission.FLEET_READ))], responses=_404,
            summary="Every version of an isolation rule")  # fmt: skip
def rule_history(name: str, request: Request) -> list[IsolationRule]:
    _unscoped(request, "the rule list")
    found = _engine(request).rules.history(name)
    if not found:
        raise HTTPException(404, f"no isolation rule {name!r}")
    return found


@router.put("/rules/{name}", dependencies=[Depends(require(Permission.CONFIG_WRITE))],
            summary="Save an isolation rule (a new version)")  # fmt: skip
def save_rule(name: str, rule: IsolationRule, request: Request, principal: PrincipalDep) -> IsolationRule:
    _unscoped(request, "an isolation rule")
    if rule.name != name:
        raise _bad("name", f"the body names {rule.name!r}, the path {name!r}")
    return _engine(request).rules.save(rule, principal.name)


@router.delete("/rules/{name}", dependencies=[Depends(require(Permission.CONFIG_WRITE))], status_code=204, responses=_404,
               summary="Retire an isolation rule")  # fmt: skip
def delete_rule(name: str, request: Request, principal: PrincipalDep) -> None:
    _unscoped(request, "an isolation rule")
    try:
        _engine(request).rules.delete(name, principal.name)
    except RuleError as exc:
        raise HTTPException(404, str(exc)) from exc


# --- running ------------------------------------------------------------------------------------------


@router.post(
    "/run",
    dependencies=[Depends(require(Permission.FINDINGS_WRITE))],
    summary="Run the engine on a past window",
)
async def run(body: RunBody, request: Request) -> RunResult:
    _unscoped(request, "running the findings engine")
    try:
        window = resolve_window(body.time_from, body.time_to)
    except AnalysisError as exc:
        raise _bad(exc.field, exc.message) from exc
    if window.span_ns > 31 * 86400 * NS:
        raise _bad("time_from", "at most 31 days per run")
    engine = _engine(request)
    started = time.perf_counter()
    done = await run_in_threadpool(engine.run_range, window.start_ns // NS, window.end_ns // NS)
    return RunResult(minutes=done["minutes"], new=done["new"], extended=done["extended"],
                     elapsed_s=round(time.perf_counter() - started, 3))  # fmt: skip


# --- findings -------------------------------------------------------------------------------------------


@router.get("", dependencies=[Depends(require(Permission.FLOWS_READ))], summary="Findings, newest first")
def list_findings(
    request: Request, scope: ScopeDep,
    kind: Annotated[str | None, Query(description=f"one of {', '.join(KINDS)}")] = None,
    severity: Annotated[str | None, Query(description="least severity: info, warning, critical")] = None,
    state: Annotated[Literal["open", "acknowledged", "muted"] | None, Query()] = None,
    time_from: Annotated[str | None, Query(description="window start (ISO 8601, epoch, -1h)")] = None,
    time_to: Annotated[str | None, Query(description="window end (default now)")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> FindingList:  # fmt: skip
    if kind is not None and kind not in KINDS:
        raise HTTPException(422, [unprocessable_item("query", "kind", f"unknown kind {kind!r}", list(KINDS))])
    if severity is not None and severity not in SEVERITIES:
        raise HTTPException(422, [unprocessable_item("query", "severity", f"unknown severity {severity!r}",
                                                     list(SEVERITIES))])  # fmt: skip
    t0 = t1 = None
    if time_from is not None:
        try:
            window = resolve_window(time_from, time_to)
        except AnalysisError as exc:
            raise HTTPException(422, [unprocessable_item("query", exc.field, exc.message)]) from exc
        t0, t1 = window.start_ns // NS, window.end_ns // NS
    found = _engine(request).findings.find(scope.project_ids, kind, severity, state, t0, t1, limit)
    return FindingList(count=len(found), findings=found)


def _visible(request: Request, finding_id: str, projects: frozenset[int] | None) -> Finding:
    found = _engine(request).findings.get(finding_id, projects)
    if found is None:
        raise HTTPException(404, f"no finding {finding_id!r}")
    return found


@router.get(
    "/{finding_id}",
    dependencies=[Depends(require(Permission.FLOWS_READ))],
    responses=_404,
    summary="One finding",
)
def show_finding(finding_id: str, request: Request, scope: ScopeDep) -> Finding:
    return _visible(request, finding_id, scope.project_ids)


def _act(request: Request, finding_id: str, action: str, body: ActBody, scope: Any, principal: Any) -> Action:
    finding = _visible(request, finding_id, scope.project_ids)
    until_s = None
    if body.until is not None:
        if action != "mute":
            raise _bad("until", "only a mute has an end")
        until_s = _until(body.until)
    return _engine(request).findings.act(finding, action, principal.name, body.reason, until_s)


def _until(value: str | int | float) -> float:
    """End of a mute: ISO 8601, epoch, or ``+2h`` from now; must be in the future."""
    from cloudtap.server.query.errors import QueryError
    from cloudtap.server.query.timespec import parse_instant

    text, now = str(value).strip(), time.time_ns()
    try:
        at = (
            2 * now - parse_instant("-" + text[1:], now, "until")
            if text.startswith("+")
            else parse_instant(value, now, "until")
        )
    except QueryError as exc:
        raise _bad("until", exc.message) from exc
    if at <= now:
        raise _bad("until", "a mute must end in the future (e.g. +2h)")
    return at / NS


@router.post(
    "/{finding_id}/ack",
    dependencies=[Depends(require(Permission.FINDINGS_WRITE))],
    responses=_404,
    summary="Acknowledge",
)
def ack(finding_id: str, body: ActBody, request: Request, scope: ScopeDep, principal: PrincipalDep) -> Action:
    return _act(request, finding_id, "ack", body, scope, principal)


@router.post("/{finding_id}/mute", dependencies=[Depends(require(Permission.FINDINGS_WRITE))], responses=_404,
             summary="Mute (this finding and later ones of its kind and subject)")  # fmt: skip
def mute(
    finding_id: str, body: ActBody, request: Request, scope: ScopeDep, principal: PrincipalDep
) -> Action:
    return _act(request, finding_id, "mute", body, scope, principal)


@router.post(
    "/{finding_id}/unmute",
    dependencies=[Depends(require(Permission.FINDINGS_WRITE))],
    responses=_404,
    summary="Lift a mute",
)
def unmute(
    finding_id: str, body: ActBody, request: Request, scope: ScopeDep, principal: PrincipalDep
) -> Action:
    return _act(request, finding_id, "unmute", body, scope, principal)
