"""POST /api/v1/pcap: the packets of a VM (or of explicit capture points) in a window, as one pcapng.

The server asks every agent concurrently, merges the answers by time (one interface block per capture
point, named ``<host>/<vm>/<interface>``) and streams the file with its ``Content-Length``. Answers 400
(bad request, no inventory to resolve ``vm``), 404 (no agent saw the VM), 413 (over the size cap, with
the reason), 502 (an agent failed). Every retrieval, served or not, is one line of the audit log (who:
the ``X-Cloudtap-User`` header). Target URLs must be http(s) URLs with a host (else 422, like any
malformed body).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloudtap.server.api.routes._errors import INVALID
from cloudtap.server.pcap import AuditLog, PcapError, PcapRequest, Target, default_audit_path, retrieve
from cloudtap.server.pcap.errors import PcapRequestError
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.timespec import parse_instant

router = APIRouter(prefix="/api/v1/pcap", tags=["pcap"])
PCAPNG = "application/x-pcapng"


class TargetIn(BaseModel):
    """A capture point to ask: an agent's control URL and the interfaces (names, VM domains, globs) on it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="agent control URL: http(s)://host[:port][/path]")
    interfaces: list[str] = Field(default_factory=list, max_length=1024)
    host: str | None = Field(None, max_length=256)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return check_agent_url(v)


def check_agent_url(url: str) -> str:
    """``url`` if it is an ``http``/``https`` URL with a host (and a valid port); else ValueError naming it."""
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise ValueError(f"target url {url!r} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"target url {url!r} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"target url {url!r} is not an http(s) URL with a host, like http://10.0.0.7:9477")
    if port == 0:
        raise ValueError(f"target url {url!r}: port 0")
    return url


class PcapIn(BaseModel):
    """A retrieval: ``vm`` (resolved through the inventory) or ``targets``; times as ISO 8601, epoch or ``-1h``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    vm: str | None = None
    targets: list[TargetIn] | None = None
    time_from: str | int | float = Field(alias="from")
    time_to: str | int | float = Field("now", alias="to")
    filter: str | None = None
    max_bytes: int | None = Field(None, gt=0)


class PcapErrorOut(BaseModel):
    """Why a retrieval was refused."""

    detail: str


def _audit(request: Request) -> AuditLog:
    state = request.app.state
    log = getattr(state, "pcap_audit", None)
    if log is None:
        log = state.pcap_audit = AuditLog(default_audit_path(state.settings))
    return log  # type: ignore[no-any-return]


@router.post(
    "",
    response_class=StreamingResponse,
    responses={
        200: {"content": {PCAPNG: {}}, "description": "the merged pcapng"},
        400: {"model": PcapErrorOut,
              "description": "body not JSON, bad window or filter, or vm given with no inventory"},
        **INVALID,
        404: {"model": PcapErrorOut, "description": "no agent captured the VM in the window"},
        413: {"model": PcapErrorOut, "description": "the packets exceed the size cap (reason in detail)"},
        502: {"model": PcapErrorOut, "description": "an agent failed or could not be reached"},
    },
)
async def pcap(
    body: PcapIn,
    request: Request,
    x_cloudtap_user: Annotated[str | None, Header()] = None,
) -> Any:
    """Retrieve stored packets from the agents as one pcapng stream."""
    settings = request.app.state.settings.pcap
    audit = _audit(request)
    started = time.perf_counter()
    who = x_cloudtap_user or "anonymous"
    what: dict[str, Any] = {
        "user": who,
        "client": request.client.host if request.client else None,
        "vm": body.vm,
        "filter": body.filter,
    }
    try:
        now = time.time_ns()
        try:
            from_ns = parse_instant(body.time_from, now, "from")
            to_ns = parse_instant(body.time_to, now, "to")
        except QueryError as exc:
            raise PcapRequestError(str(exc)) from exc
        cap = min(body.max_bytes or settings.max_bytes, settings.max_bytes)
        what.update(from_ns=from_ns, to_ns=to_ns, max_bytes=cap)
        req = PcapRequest(
            from_ns=from_ns,
            to_ns=to_ns,
            vm=body.vm,
            targets=[Target(t.url, tuple(t.interfaces), t.host) for t in body.targets or []],
            bpf=body.filter,
            max_bytes=cap,
        )
        inventory = getattr(request.app.state, "pcap_targets", None)
        targets = req.resolve(inventory)
        what["targets"] = [{"url": t.url, "interfaces": list(t.interfaces)} for t in targets]
        req.targets = targets
        merged = await retrieve(req, None, settings.spool_directory, settings.agent_timeout_s)
    except PcapError as exc:
        status = exc.status
        audit.record(**what, status=status, bytes=0, packets=0, error=str(exc),
                     elapsed_ms=round((time.perf_counter() - started) * 1e3, 1))  # fmt: skip
        return JSONResponse({"detail": str(exc)}, status_code=status)

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
            audit.record(**what, status=200, bytes=sent, packets=merged.packets, complete=complete,
                         interfaces=merged.interfaces,
                         elapsed_ms=round((time.perf_counter() - started) * 1e3, 1))  # fmt: skip

    name = (body.vm or "capture").replace("/", "_")
    headers = {
        "Content-Length": str(merged.size),
        "Content-Disposition": f'attachment; filename="{name}.pcapng"',
        "X-Cloudtap-Packets": str(merged.packets),
    }
    return StreamingResponse(stream(), media_type=PCAPNG, headers=headers)
