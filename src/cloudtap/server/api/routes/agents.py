"""Agent endpoints of the controller: register, heartbeat, fetch config, long-poll commands, report results.

Registration takes the bootstrap token (``controller.token`` / ``agent_tokens``) as ``Authorization:
Bearer`` (or the agent's current credential when it registers again) and answers the agent's own
``credential`` and ``control_key``, new at every registration. Every other agent call (and ``POST
/ingest``) takes that credential; a credential only acts for its own agent (403 otherwise). Included in
the controller's router (``/api/v1``); see docs/controller.md.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cloudtap.server.access.permissions import AGENT, PUBLIC
from cloudtap.server.api.guard import bearer, require
from cloudtap.server.api.routes._checked import CheckedRoute
from cloudtap.server.api.routes._controller_app import AUTH, UNKNOWN_AGENT, ctl_of, refused
from cloudtap.server.api.routes._errors import BAD_JSON, INVALID, ErrorText
from cloudtap.server.audit import audit_of
from cloudtap.server.controller.auth import Refusal
from cloudtap.server.controller.registry import AgentRecord
from cloudtap.server.controller.service import IMPORTER_PREFIX
from cloudtap.server.controller.status import HeartbeatReport, inventory_report

router = APIRouter(tags=["controller"], route_class=CheckedRoute)
AGENT_ONLY = [Depends(require(AGENT))]
BODY: dict[int | str, dict[str, Any]] = {**BAD_JSON, **INVALID}


def caller_agent(request: Request, agent_id: str) -> AgentRecord:
    """The agent ``agent_id`` when the request's credential is its own; 403 when it is another's."""
    caller = getattr(request.state, "agent_id", None)
    if caller is None:
        raise RuntimeError(f"route {request.url.path} has no agent requirement declared")
    if str(caller).startswith(IMPORTER_PREFIX):
        if caller == f"{IMPORTER_PREFIX}anonymous":  # auth.enabled false: no token at all
            raise HTTPException(401, "missing agent credential: send 'Authorization: Bearer <credential>' (issued "
                                     "at registration)")  # fmt: skip
        raise HTTPException(403, "a user token only imports batches (POST /api/v1/ingest); agent routes need the "
                                 "agent's own credential")  # fmt: skip
    if caller != agent_id:
        raise HTTPException(403, f"this credential belongs to agent {caller!r}, not to {agent_id!r}")
    try:
        return ctl_of(request).registry.get(agent_id)
    except Refusal as exc:
        raise refused(exc) from exc


def batch_owner(request: Request) -> str | None:
    """The agent name a batch must carry for this caller: its agent's; None for an importing user (any name)."""
    caller = str(getattr(request.state, "agent_id", "") or "")
    if not caller:
        raise RuntimeError(f"route {request.url.path} has no agent requirement declared")
    if caller.startswith(IMPORTER_PREFIX):
        return None
    try:
        return ctl_of(request).registry.get(caller).name
    except Refusal as exc:
        raise HTTPException(401, f"agent {caller!r} is no longer registered: register again") from exc


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


class RegisterRequest(BaseModel):
    """What an agent says about itself when it registers."""

    name: str = Field("", description="the agent's own name (agent_id in its records)")
    hostname: str = Field(..., min_length=1, description="host name (matched against the inventory's hosts)")
    machine_id: str = Field(..., min_length=1, description="/etc/machine-id")
    address: str = Field("", description="management address (default: the request's source address)")
    group: str = "default"
    version: str = ""
    mode: str = ""
    heartbeat_s: float | None = Field(None, gt=0, le=86400, allow_inf_nan=False)
    control_url: str = Field("", max_length=4096, description="where the server reaches the agent's control endpoint")


class RegisterAnswer(BaseModel):
    agent_id: str
    name: str
    group: str
    heartbeat_s: float
    config_version: int
    credential: str = Field(..., description="the agent's own credential: 'Authorization: Bearer' on every later call")
    control_key: str = Field(..., description="the key the agent's control endpoint must require from the server")
    control_url: str = Field("", description="the control URL the server accepted ('' when none or refused)")
    control_url_error: str = Field("", description="why the reported control URL was refused")


@router.post("/agents/register", response_model=RegisterAnswer, dependencies=[Depends(require(PUBLIC))],
             responses={**AUTH, 409: {"model": ErrorText, "description": "the name belongs to another agent"},
                        **BODY})  # fmt: skip
async def register(request: Request, body: RegisterRequest) -> RegisterAnswer:
    """Register (or re-register) an agent with the bootstrap token (or its current credential); the server
    assigns its id (stable per host name + machine id) and issues a new credential and control key."""
    peer = _peer(request)
    audit = audit_of(request.app)
    try:  # registering recompiles the agent's config: off the event loop (a fleet starting at once stalled it)
        answer = await run_in_threadpool(ctl_of(request).register, bearer(request), body.model_dump(), peer)
    except Refusal as exc:
        audit.record("agent.register", None, "refused", host=body.hostname, name=body.name, peer=peer,
                     status=exc.status, reason=exc.reason)  # fmt: skip
        raise refused(exc) from exc
    audit.record("agent.register", f"agent:{answer['agent_id']}", agent=answer["agent_id"], host=body.hostname,
                 name=answer["name"], peer=peer, control_url=answer["control_url"])  # fmt: skip
    return RegisterAnswer(**answer)


class HeartbeatAnswer(BaseModel):
    config_version: int = Field(..., description="fetch GET /agents/{id}/config when this differs from yours")
    heartbeat_s: float
    server_time: float
    control_url_error: str = Field("", description="why the reported control URL was refused (kept empty)")


@router.post("/agents/{agent_id}/heartbeat", response_model=HeartbeatAnswer, dependencies=AGENT_ONLY,
             responses={**AUTH, **UNKNOWN_AGENT, **BODY})  # fmt: skip
async def heartbeat(request: Request, agent_id: str, report: HeartbeatReport) -> HeartbeatAnswer:
    """Status every ``heartbeat_s``; the answer says the current config version."""
    rec = caller_agent(request, agent_id)
    answer = HeartbeatAnswer(**ctl_of(request).heartbeat(rec, report, _peer(request)))
    _teach_inventory(request, rec, report)
    return answer


def _teach_inventory(request: Request, rec: AgentRecord, report: HeartbeatReport) -> None:
    """Without a cloud API, the inventory learns hosts and VM interfaces from heartbeats (docs/inventory.md)."""
    service = getattr(request.app.state, "inventory_service", None)
    learner = getattr(service, "agents", None)
    if learner is None:
        return
    learner.update(agent_inventory_report(rec, report))


def agent_inventory_report(rec: AgentRecord, report: HeartbeatReport) -> dict[str, Any]:
    """What the inventory learns from ``rec``'s ``report``: host, VM ports with their IPs, VMs (nova metadata)."""
    try:
        address = str(ipaddress.ip_address(rec.address)) if rec.address else ""
    except ValueError:
        address = ""
    return inventory_report(rec.name, rec.hostname, address, report)


@router.get("/agents/{agent_id}/config", dependencies=AGENT_ONLY, responses={**AUTH, **UNKNOWN_AGENT, **INVALID})
async def agent_config(request: Request, agent_id: str) -> dict[str, Any]:
    """The agent's config document: ``{version, group, overlay, policy, apply}``."""
    return ctl_of(request).config_for(caller_agent(request, agent_id))


@router.get("/agents/{agent_id}/commands", dependencies=AGENT_ONLY, responses={**AUTH, **UNKNOWN_AGENT, **INVALID})
async def agent_commands(
    request: Request, agent_id: str, wait: Annotated[float, Query(ge=0, le=60)] = 25.0
) -> dict[str, Any]:
    """Long-poll: answers as soon as a command is queued for the agent, or ``[]`` after ``wait`` seconds."""
    rec = caller_agent(request, agent_id)
    cmds = await ctl_of(request).commands.wait(rec.id, wait)
    return {"commands": [c.public() for c in cmds]}


class CommandResult(BaseModel):
    ok: bool
    detail: str = Field("", max_length=4096)


@router.post("/agents/{agent_id}/commands/{command_id}/result", dependencies=AGENT_ONLY, responses={
    **AUTH, 404: {"model": ErrorText, "description": "unknown agent id, or no such command"}, **BODY})  # fmt: skip
async def command_result(request: Request, agent_id: str, command_id: int, result: CommandResult) -> dict[str, Any]:
    """The agent reports what one of its commands did."""
    rec = caller_agent(request, agent_id)
    commands = ctl_of(request).commands
    cmd = commands.get(command_id)
    if cmd is None or cmd.agent_id != rec.id:  # another agent's command is as unknown as a missing one
        raise HTTPException(404, f"no command {command_id} for agent {rec.id}")
    commands.done(command_id, result.ok, result.detail)
    return {"recorded": True}
