"""POST /api/v1/pcap: the packets of a VM (or of registered agents' interfaces) in a window, as one pcapng.

Needs ``pcap:read``; a caller bound to projects gets only packets of their projects' VMs (403
otherwise). The server asks only agents it registered, at the control addresses they registered
(callers never name a URL), concurrently, merges the answers by time (one interface block per
capture point, named ``<host>/<vm>/<interface>``) and streams the file with its ``Content-Length``.
Answers 400 (bad request, no inventory to resolve ``vm``), 404 (no agent saw the VM), 413 (over the
size cap, with the reason), 502 (an agent failed). Every retrieval, served or not, is one audit
record (``pcap.retrieve``) with the authenticated principal.
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
from cloudtap.server.pcap import PcapError, PcapRequest, retrieve
from cloudtap.server.pcap.errors import PcapRequestError
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.timespec import parse_instant

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


@router.post(
    "",
    dependencies=[Depends(require(Permission.PCAP_READ))],
    response_class=StreamingResponse,
    responses={
        200: {"content": {PCAPNG: {}}, "description": "the merged pcapng"},
        400: {"model": PcapErrorOut,
              "description": "body not JSON, bad window or filter, or vm given with no inventory"},
        403: {"model": PcapErrorOut, "description": "the VM is not in the caller's projects"},
        **INVALID,
        404: {"model": PcapErrorOut, "description": "no agent captured the VM in the window"},
        413: {"model": PcapErrorOut, "description": "the packets exceed the size cap (reason in detail)"},
        502: {"model": PcapErrorOut, "description": "an agent failed or could not be reached"},
    },
)
async def pcap(body: PcapIn, request: Request, principal: PrincipalDep) -> Any:
    """Retrieve stored packets from the agents as one pcapng stream (audited, served or not)."""
    settings = request.app.state.settings.pcap
    audit = audit_of(request.app)
    started = time.perf_counter()
    what: dict[str, Any] = {
        "client": request.client.host if request.client else None,
        "vm": body.vm,
        "agents": [a.agent for a in body.agents or []] or None,
        "filter": body.filter,
    }

    def refused(status: int, reason: str) -> JSONResponse:
        audit.record("pcap.retrieve", principal.name, "refused" if status < 500 else "failed", **what, status=status,
                     bytes=0, packets=0, error=reason, elapsed_ms=round((time.perf_counter() - started) * 1e3, 1))  # fmt: skip
        return JSONResponse({"detail": reason}, status_code=status)

    try:
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
            explicit = sources.targets_for_agents([(a.agent, tuple(a.interfaces)) for a in body.agents])
        req = PcapRequest(from_ns=from_ns, to_ns=to_ns, vm=body.vm, targets=explicit, bpf=body.filter, max_bytes=cap)
        targets = req.resolve(sources)
        what["targets"] = [{"agent": t.host, "interfaces": list(t.interfaces)} for t in targets]
        req.targets = targets
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

    name = (body.vm or "capture").replace("/", "_")
    headers = {
        "Content-Length": str(merged.size),
        "Content-Disposition": f'attachment; filename="{name}.pcapng"',
        "X-Cloudtap-Packets": str(merged.packets),
    }
    return StreamingResponse(stream(), media_type=PCAPNG, headers=headers)
