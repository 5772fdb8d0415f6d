"""POST /api/v1/pcap: the packets of a VM (or of registered agents' interfaces) in a window, as one pcapng.

Needs ``pcap:read``; a caller bound to projects gets only packets of their projects' VMs (403
otherwise). The server asks only agents it registered, at the control addresses they registered
(callers never name a URL), concurrently, merges the answers by time (one interface block per
capture point, named ``<host>/<vm>/<interface>``) and streams the file with its ``Content-Length``.
Answers 400 (bad request, no inventory to resolve ``vm``), 404 (no agent saw the VM), 413 (over the
size cap, with the reason), 502 (an agent failed). Every retrieval, served or not, is one audit
record (``pcap.retrieve``) with the authenticated principal.

POST /api/v1/pcap/preview: the same body, answered with what the download would be (packets, bytes,
capture points, whether it fits the size cap) and no packets; the server fetches and merges as for a
download, then discards the file. Same permission, scope and errors; audited as ``pcap.preview``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.server.access.permissions import Permission
from cloudtap.server.api.deps import PrincipalDep
from cloudtap.server.api.guard import require, scope_of
from cloudtap.server.api.routes._errors import INVALID
from cloudtap.server.audit import audit_of
from cloudtap.server.pcap import PcapError, PcapRequest, PcapTooLarge, retrieve
from cloudtap.server.pcap.errors import PcapRequestError
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.timespec import iso, parse_instant

router = APIRouter(prefix="/api/v1/pcap", tags=["pcap"])
PCAPNG = "application/x-pcapng"


class AgentIn(BaseModel):
    """A registered agent to ask (id or name) and the interfaces on it (names, VM domains, globs; empty: all)."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=256)
    interfaces: list[str] = Field(default_factory=list, max_length=1024)


class PcapIn(BaseModel):
    """A retrieval: ``vm`` (resolved through the inventory) or registered ``agents``; times as ISO 8601,
    epoch or ``-1h``. The server asks only agents it registered, at the addresses they registered."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    vm: str | None = Field(None, max_length=256)
    agents: list[AgentIn] | None = Field(None, max_length=1000)
    time_from: str | int | float = Field(alias="from")
    time_to: str | int | float = Field("now", alias="to")
    filter: str | None = Field(None, max_length=4096)
    max_bytes: int | None = Field(None, gt=0)


class PcapErrorOut(BaseModel):
    """Why a retrieval was refused."""

    detail: str


def _check_scope(request: Request, body: PcapIn) -> None:
    """A project-bound caller may pull only packets of VMs of their projects (and never by agent)."""
    projects = scope_of(request).projects
    if projects is None:
        return
    if body.agents:
        raise PcapForbidden("pulling packets by agent needs the pcap:read permission on every project")
    snapshot = getattr(getattr(request.app.state, "inventory", None), "current", lambda: None)()
    vms = [v for v in getattr(snapshot, "vms", []) if v.name == body.vm]
    keys = {p.key for p in getattr(snapshot, "projects", []) if p.name in projects or p.key in projects}
    if not vms or any(v.project not in keys for v in vms):
        raise PcapForbidden(f"VM {body.vm!r} is not in your projects ({', '.join(sorted(projects))})")


class PcapForbidden(PcapError):
    """The caller may not pull these packets."""

    status = 403


def _prepare(request: Request, body: PcapIn, what: dict[str, Any]) -> PcapRequest:
    """Check the caller's scope, parse the window, resolve the targets (noted in ``what`` for the audit).

    Raises:
        PcapError: forbidden (403), bad window or agent (400), no agent saw the VM (404).
    """
    settings = request.app.state.settings.pcap
    _check_scope(request, body)
    now = time.time_ns()
    try:
        from_ns = parse_instant(body.time_from, now, "from")
        to_ns = parse_instant(body.time_to, now, "to")
    except QueryError as exc:
        raise PcapRequestError(str(exc)) from exc
    cap = min(body.max_bytes or settings.max_bytes, settings.max_bytes)
    what.update(from_ns=from_ns, to_ns=to_ns, max_bytes=cap)
    sources = getattr(request.app.state, "pcap_targets", None)
    explicit = []
    if body.agents:
        if sources is None or not hasattr(sources, "targets_for_agents"):
            raise PcapRequestError("this server has no registry of agents: give a vm")
        explicit = sources.targets_for_agents([(a.agent, tuple(a.interfaces)) for a in body.agents])
    req = PcapRequest(
        from_ns=from_ns, to_ns=to_ns, vm=body.vm, targets=explicit, bpf=body.filter, max_bytes=cap
    )
    targets = req.resolve(sources)
    what["targets"] = [{"agent": t.host, "interfaces": list(t.interfaces)} for t in targets]
    req.targets = targets
    return req


def _filename(body: PcapIn) -> str:
    return f"{(body.vm or 'capture').replace('/', '_')}.pcapng"


class TargetOut(BaseModel):
    """An agent asked and the interfaces on it (empty: all it stores)."""

    agent: str | None
    interfaces: list[str]


class PcapPreview(BaseModel):
    """What ``POST /api/v1/pcap`` with the same body would deliver (no packets are sent)."""

    packets: int | None = Field(description="packets in the file; null when over the size cap")
    bytes: int = Field(description="size of the pcapng; when over_cap, at least this")
    over_cap: bool = Field(description="the download would be refused (413): narrow the window or the filter")
    max_bytes: int = Field(description="the size cap that applies")
    detail: str | None = Field(None, description="why it is over the cap")
    interfaces: list[str] = Field(description="capture points in the file, <host>/<vm>/<interface>")
    targets: list[TargetOut]
    time_from: str = Field(alias="from", description="window start (ISO 8601)")
    time_to: str = Field(alias="to", description="window end (ISO 8601)")
    filter: str | None
    filename: str = Field(description="the name the download is served under")

    model_config = ConfigDict(populate_by_name=True)


#: What both the download and its preview refuse, and why.
_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": PcapErrorOut, "description": "body not JSON, bad window or filter, or vm given with no inventory"},
    403: {"model": PcapErrorOut, "description": "the VM is not in the caller's projects"},
    **INVALID,
    404: {"model": PcapErrorOut, "description": "no agent captured the VM in the window"},
}


def _described(request: Request, body: PcapIn) -> dict[str, Any]:
    """What a retrieval asked for, as its audit records name it."""
    return {
        "client": request.client.host if request.client else None,
        "vm": body.vm,
        "agents": [a.agent for a in body.agents or []] or None,
        "filter": body.filter,
    }


@router.post(
    "",
    dependencies=[Depends(require(Permission.PCAP_READ))],
    response_class=StreamingResponse,
    responses={
        200: {"content": {PCAPNG: {}}, "description": "the merged pcapng"},
        **_REFUSALS,
        413: {"model": PcapErrorOut, "description": "the packets exceed the size cap (reason in detail)"},
        502: {"model": PcapErrorOut, "description": "an agent failed or could not be reached"},
    },
)
async def pcap(body: PcapIn, request: Request, principal: PrincipalDep) -> Any:
    """Retrieve stored packets from the agents as one pcapng stream (audited, served or not)."""
    settings = request.app.state.settings.pcap
    audit = audit_of(request.app)
    started = time.perf_counter()
    what = _described(request, body)

    def refused(status: int, reason: str) -> JSONResponse:
        audit.record("pcap.retrieve", principal.name, "refused" if status < 500 else "failed", **what, status=status,
                     bytes=0, packets=0, error=reason, elapsed_ms=round((time.perf_counter() - started) * 1e3, 1))  # fmt: skip
        return JSONResponse({"detail": reason}, status_code=status)

    try:
        req = _prepare(request, body, what)
        merged = await retrieve(req, None, settings.spool_directory, settings.agent_timeout_s)
    except PcapError as exc:
        return refused(exc.status, str(exc))
    except Exception as exc:  # audited too, then the usual 500
        refused(500, f"{type(exc).__name__}: {exc}")
        raise

    def stream() -> Iterator[bytes]:
        sent = 0
        complete = False
        try:
            for chunk in merged.iter_bytes():
                sent += len(chunk)
                yield chunk
            complete = True
        finally:
            merged.close()
            audit.record("pcap.retrieve", principal.name, "ok" if complete else "failed", **what, status=200,
                         bytes=sent, packets=merged.packets, complete=complete, interfaces=merged.interfaces,
                         elapsed_ms=round((time.perf_counter() - started) * 1e3, 1))  # fmt: skip

    headers = {
        "Content-Length": str(merged.size),
        "Content-Disposition": f'attachment; filename="{_filename(body)}"',
        "X-Cloudtap-Packets": str(merged.packets),
    }
    return StreamingResponse(stream(), media_type=PCAPNG, headers=headers)


@router.post(
    "/preview",
    dependencies=[Depends(require(Permission.PCAP_READ))],
    response_model=PcapPreview,
    responses={
        **_REFUSALS,
        502: {"model": PcapErrorOut, "description": "an agent failed or could not be reached"},
    },
    summary="Size of a retrieval, before downloading it",
)
async def pcap_preview(body: PcapIn, request: Request, principal: PrincipalDep) -> Any:
    """Packets and bytes the same ``POST /api/v1/pcap`` would deliver, and whether it fits the size cap.

    The server fetches and merges the packets as for a download, counts them and discards them; nothing
    leaves the server. Audited as ``pcap.preview`` (served or not)."""
    settings = request.app.state.settings.pcap
    audit = audit_of(request.app)
    started = time.perf_counter()
    what = _described(request, body)

    def done(outcome: str, status: int, **extra: Any) -> None:
        audit.record("pcap.preview", principal.name, outcome, **what, status=status, **extra,
                     elapsed_ms=round((time.perf_counter() - started) * 1e3, 1))  # fmt: skip

    try:
        req = _prepare(request, body, what)
        answer: dict[str, Any] = {
            "max_bytes": req.max_bytes,
            "targets": what["targets"],
            "from": iso(req.from_ns),
            "to": iso(req.to_ns),
            "filter": body.filter,
            "filename": _filename(body),
        }
        try:
            merged = await retrieve(req, None, settings.spool_directory, settings.agent_timeout_s)
        except PcapTooLarge as exc:
            answer.update(packets=None, bytes=exc.needed or req.max_bytes, over_cap=True, detail=str(exc),
                          interfaces=[])  # fmt: skip
        else:
            with merged:
                answer.update(
                    packets=merged.packets, bytes=merged.size, over_cap=False, interfaces=merged.interfaces
                )
    except PcapError as exc:
        done("refused" if exc.status < 500 else "failed", exc.status, error=str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)
    except Exception as exc:
        done("failed", 500, error=f"{type(exc).__name__}: {exc}")
        raise
    preview = PcapPreview.model_validate(answer)
    done("ok", 200, bytes=preview.bytes, packets=preview.packets, over_cap=preview.over_cap)
    return preview
