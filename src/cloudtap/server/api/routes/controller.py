"""Controller API: agents (their own endpoints: :mod:`.agents`), groups, policies, commands, compilation.

Every route declares its permission (``require``): reading the fleet needs ``fleet:read``; start/stop,
moving and deleting agents ``fleet:control``; group configs and policies ``config:write``; a sync now
``inventory:sync``. An operator bound to projects acts only on agents whose host runs only VMs of their
projects, and on policies limited to one of their projects; group-wide changes need a grant on every
project (:mod:`cloudtap.server.controller.project_scope`). Every change, and every refusal of one, is a
line of the audit log. Every refusal (``{"detail": "<why>"}``) says why; bad input is a 422 in FastAPI's
shape. See docs/controller.md.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from cloudtap.errors import ConfigError
from cloudtap.server.access.permissions import Permission
from cloudtap.server.api.guard import principal_of, require
from cloudtap.server.api.routes import agents, distribution
from cloudtap.server.api.routes._checked import CheckedRoute, unsafe_json
from cloudtap.server.api.routes._controller_app import (
    FORBIDDEN,
    NO_AGENT,
    NO_COMMAND,
    NO_POLICY,
    build_controller,
    controller_db_path,
    ctl_of,
    get_controller_app,
    invalid,
    lifespan,
    refused,
)
from cloudtap.server.api.routes._errors import BAD_JSON, INVALID
from cloudtap.server.audit import audit_of
from cloudtap.server.controller.auth import Refusal
from cloudtap.server.controller.policy import Policy
from cloudtap.server.controller.preview import group_preview, policy_preview
from cloudtap.server.controller.project_scope import agent_refusal, policy_refusal, unrestricted_refusal
from cloudtap.server.controller.registry import AgentRecord

__all__ = ["CheckedRoute", "build_controller", "controller_db_path", "ctl_of", "get_controller_app", "invalid",
           "router", "unsafe_json"]  # fmt: skip

router = APIRouter(prefix="/api/v1", tags=["controller"], lifespan=lifespan, route_class=CheckedRoute)
router.include_router(agents.router)
router.include_router(distribution.router)  # destinations, distribution policies, policy dry-run

READ = [Depends(require(Permission.FLEET_READ))]
CONTROL = [Depends(require(Permission.FLEET_CONTROL))]
CONFIG = [Depends(require(Permission.CONFIG_WRITE))]
#: routes with a JSON body: 400 when it is not JSON, 422 when a field is bad
BODY: dict[int | str, dict[str, Any]] = {**BAD_JSON, **INVALID}


def _audit(request: Request, action: str, outcome: str = "ok", **detail: Any) -> None:
    audit_of(request.app).record(action, principal_of(request).name, outcome, **detail)


def _deny(request: Request, action: str, reason: str | None, **detail: Any) -> None:
    """403 (audited) when ``reason`` says why the caller may not do ``action``."""
    if reason is not None:
        _audit(request, action, "refused", reason=reason, **detail)
        raise HTTPException(403, reason)


def _scope(request: Request, permission: Permission) -> frozenset[str] | None:
    return principal_of(request).projects_for(permission)


def _find(request: Request, key: str, action: str | None = None) -> AgentRecord:
    rec = ctl_of(request).registry.find(key)
    if rec is None:
        if action is not None:
            _audit(request, action, "failed", agent=key, reason="no such agent")
        raise HTTPException(404, f"no agent with id, name or host name {key!r}")
    return rec


def _acted_on(request: Request, key: str, action: str) -> AgentRecord:
    """The agent ``key`` when the caller's fleet:control scope covers its host (else 403, audited)."""
    rec = _find(request, key, action)
    reason = agent_refusal(ctl_of(request).inventory(), rec, _scope(request, Permission.FLEET_CONTROL))
    _deny(request, action, reason, agent=rec.id, name=rec.name)
    return rec


# -- agents ---------------------------------------------------------------------------------------------
@router.get("/agents", dependencies=READ, responses=FORBIDDEN)
def list_agents(request: Request) -> list[dict[str, Any]]:
    """Every registered agent with liveness, last-minute figures and its accepted control URL."""
    return ctl_of(request).fleet.top("cpu", "1m", limit=100000)


@router.get("/agents/{agent_id}", dependencies=READ, responses={**FORBIDDEN, **NO_AGENT, **INVALID})
def agent_detail(request: Request, agent_id: str) -> dict[str, Any]:
    """One agent (by id, name or host name): record, latest status, config document."""
    ctl = ctl_of(request)
    rec = _find(request, agent_id)
    latest = ctl.heartbeats.latest(rec.id)
    refusal = ctl.url_refusals.get(rec.id)
    return {"agent": rec.__dict__, "stale": ctl.fleet.is_stale(rec),
            "status": latest.report.model_dump() if latest else None, "config": ctl.config_for(rec),
            "control_url_refused": refusal.count if refusal else 0,
            "control_url_error": refusal.reason if refusal else ""}  # fmt: skip


@router.delete("/agents/{agent_id}", dependencies=CONTROL, responses={**FORBIDDEN, **NO_AGENT, **INVALID})
def delete_agent(request: Request, agent_id: str) -> dict[str, Any]:
    """Forget an agent and its credential (if still running, it registers again with the bootstrap token)."""
    rec = _acted_on(request, agent_id, "agent.delete")
    ctl_of(request).remove_agent(rec.id)
    _audit(request, "agent.delete", agent=rec.id, name=rec.name, host=rec.hostname)
    return {"deleted": rec.id}


class GroupChange(BaseModel):
    group: str = Field(..., min_length=1, max_length=200)


@router.put("/agents/{agent_id}/group", dependencies=CONTROL, responses={**FORBIDDEN, **NO_AGENT, **BODY})
def set_agent_group(request: Request, agent_id: str, body: GroupChange) -> dict[str, Any]:
    """Move an agent to another group; its config version changes if the overlay differs."""
    rec = _acted_on(request, agent_id, "agent.group")
    moved = ctl_of(request).set_group(rec.id, body.group)
    _audit(request, "agent.group", agent=rec.id, name=rec.name, before=rec.group, group=moved.group)
    return {"agent_id": moved.id, "group": moved.group, "config_version": moved.config_version}


@router.post("/agents/{agent_id}/capture/{action}", dependencies=CONTROL, responses={**FORBIDDEN, **NO_AGENT, **INVALID})
def agent_capture(request: Request, agent_id: str, action: Literal["start", "stop"]) -> dict[str, Any]:
    """Start or stop capture on one agent (delivered through its long-poll: applied within a second)."""
    rec = _acted_on(request, agent_id, f"agent.capture.{action}")
    cmd = ctl_of(request).commands.put(rec.id, action)
    _audit(request, f"agent.capture.{action}", agent=rec.id, name=rec.name, command=cmd.id)
    return {"command": cmd.id, "agent_id": cmd.agent_id, "action": action}


@router.get("/commands/{command_id}", dependencies=READ, responses={**FORBIDDEN, **NO_COMMAND, **INVALID})
def command_status(request: Request, command_id: int) -> dict[str, Any]:
    """Where a command is: issued, delivered, done (with the agent's answer)."""
    cmd = ctl_of(request).commands.get(command_id)
    if cmd is None:
        raise HTTPException(404, f"no command {command_id}")
    return cmd.__dict__


# -- groups ---------------------------------------------------------------------------------------------
@router.post("/groups/{name}/capture/{action}", dependencies=CONTROL, responses={**FORBIDDEN, **INVALID})
def group_capture(request: Request, name: str, action: Literal["start", "stop"]) -> dict[str, Any]:
    """Start or stop capture on every agent of a group (needs fleet:control on every project)."""
    what = f"group.capture.{action}"
    _deny(request, what, unrestricted_refusal(f"capture {action} of group {name!r}",
                                              _scope(request, Permission.FLEET_CONTROL)), group=name)  # fmt: skip
    ctl = ctl_of(request)
    cmds = [ctl.commands.put(a.id, action).id for a in ctl.registry.all() if a.group == name]
    _audit(request, what, group=name, commands=cmds)
    return {"group": name, "action": action, "commands": cmds}


@router.get("/groups", dependencies=READ, responses=FORBIDDEN)
def list_groups(request: Request) -> list[dict[str, Any]]:
    """Every group with its overlay, version and agent count."""
    ctl = ctl_of(request)
    agents_now = ctl.registry.all()
    return [{**g.__dict__, "agents": sum(a.group == g.name for a in agents_now)} for g in ctl.groups.all()]


class GroupConfig(BaseModel):
    overlay: dict[str, Any] = Field(
        default_factory=dict, description="partial AgentConfig, e.g. {limits: {max_pps: 1000}}"
    )
    description: str | None = None


@router.put("/groups/{name}/config", dependencies=CONFIG, responses={**FORBIDDEN, **BODY})
def set_group_config(request: Request, name: str, body: GroupConfig) -> dict[str, Any]:
    """Replace a group's config overlay (422 names a bad key; config:write on every project); answers each
    key's apply mode (hot / restart)."""
    _deny(request, "group.config", unrestricted_refusal(f"the config of group {name!r}",
                                                        _scope(request, Permission.CONFIG_WRITE)), group=name)  # fmt: skip
    try:
        answer = ctl_of(request).set_group_config(name, body.overlay, body.description)
    except ConfigError as exc:
        _audit(request, "group.config", "failed", group=name, reason=str(exc))
        raise invalid("body", "overlay", str(exc)) from exc
    _audit(request, "group.config", group=name, version=answer["version"], overlay=answer["overlay"])
    return answer


class GroupConfigState(BaseModel):
    overlay: dict[str, Any]
    description: str


class GroupConfigPreview(BaseModel):
    """What ``PUT /groups/{name}/config`` with the same body would do; nothing is stored."""

    group: str
    changed: bool = Field(..., description="whether applying would change anything")
    version: int = Field(..., description="the group's config version now")
    version_after: int = Field(..., description="its version once applied")
    current: GroupConfigState
    proposed: GroupConfigState
    diff: str = Field(..., description="unified diff of current -> proposed (indented JSON, sorted keys), '' if none")
    apply: dict[str, str] = Field(..., description="each key of the proposed overlay -> hot / restart")
    changed_keys: dict[str, str] = Field(..., description="keys whose value changes -> hot / restart")
    restart_required: list[str] = Field(..., description="changed keys the agents use only after a restart")
    agents: list[str] = Field(..., description="names of the agents in the group (they get the new version)")


@router.post("/groups/{name}/config/preview", response_model=GroupConfigPreview, dependencies=CONFIG,
             responses={**FORBIDDEN, **BODY})  # fmt: skip
def preview_group_config(request: Request, name: str, body: GroupConfig) -> dict[str, Any]:
    """The diff and effect of replacing a group's overlay, before applying it (422 names a bad key, as the PUT
    would; config:write on every project). Stores nothing."""
    reason = unrestricted_refusal(f"the config of group {name!r}", _scope(request, Permission.CONFIG_WRITE))
    if reason is not None:
        raise HTTPException(403, reason)
    ctl = ctl_of(request)
    try:
        return group_preview(ctl.groups.get(name), body.overlay, body.description, ctl.registry.all())
    except ConfigError as exc:
        raise invalid("body", "overlay", str(exc)) from exc


# -- policies -------------------------------------------------------------------------------------------
@router.get("/policies", dependencies=READ, responses=FORBIDDEN)
def list_policies(request: Request) -> list[dict[str, Any]]:
    """Every policy, by priority."""
    return [p.model_dump() for p in ctl_of(request).policies.all()]


class PolicyBody(Policy):
    """A policy as sent to ``PUT /policies/{name}``: the name is optional (the path's wins)."""

    name: str | None = Field(None, description="ignored: the name in the path wins")  # type: ignore[assignment]


def _parse_policy(name: str, policy: PolicyBody) -> Policy:
    """The policy named ``name`` (the path's) from a body; a bad name is a 422 on the path."""
    try:
        return Policy.model_validate({**policy.model_dump(), "name": name})
    except ValidationError as exc:
        errors = [{**e, "loc": ("path", *e["loc"]) if e["loc"] == ("name",) else ("body", *e["loc"])}
                  for e in exc.errors(include_url=False)]  # fmt: skip
        raise RequestValidationError(errors) from None


def _policy_put_refusal(request: Request, parsed: Policy, old: Policy | None) -> str | None:
    """Why the caller may not write ``parsed`` (over ``old``); None when they may."""
    allowed, snap = _scope(request, Permission.CONFIG_WRITE), ctl_of(request).inventory()
    return policy_refusal(snap, parsed, allowed) or (policy_refusal(snap, old, allowed) if old else None)


@router.put("/policies/{name}", dependencies=CONFIG, responses={**FORBIDDEN, **BODY})
def put_policy(request: Request, name: str, policy: PolicyBody) -> dict[str, Any]:
    """Create or replace a policy (the name in the path wins); recompiles at once. A project-scoped caller
    may only write a policy limited to one of their projects, and only replace such a policy."""
    parsed = _parse_policy(name, policy)
    ctl = ctl_of(request)
    old = ctl.policies.get(name)
    _deny(request, "policy.put", _policy_put_refusal(request, parsed, old), policy=name)
    answer = ctl.put_policy(parsed)
    _audit(request, "policy.put", policy=name, doc=parsed.model_dump(), replaced=old is not None)
    return answer


@router.delete("/policies/{name}", dependencies=CONFIG, responses={**FORBIDDEN, **NO_POLICY, **INVALID})
def delete_policy(request: Request, name: str) -> dict[str, Any]:
    """Delete a policy; recompiles at once."""
    ctl = ctl_of(request)
    old = ctl.policies.get(name)
    if old is not None:
        _deny(request, "policy.delete", policy_refusal(ctl.inventory(), old, _scope(request, Permission.CONFIG_WRITE)),
              policy=name)  # fmt: skip
    try:
        answer = ctl.delete_policy(name)
    except Refusal as exc:
        _audit(request, "policy.delete", "failed", policy=name, reason=exc.reason)
        raise refused(exc) from exc
    _audit(request, "policy.delete", policy=name, doc=old.model_dump() if old else None)
    return answer


class PolicyEffect(BaseModel):
    """How one agent's capture selection would change."""

    agent_id: str
    agent: str
    host: str
    active_before: bool = Field(..., description="a policy is in force on the agent now")
    active_after: bool
    vms_before: int
    vms_after: int
    added: list[str] = Field(..., description="VMs the agent would start capturing")
    removed: list[str] = Field(..., description="VMs the agent would stop capturing")


class PolicyPreview(BaseModel):
    """What ``PUT /policies/{name}`` (or its DELETE, with ``?delete=true``) would do; nothing is stored."""

    policy: str
    exists: bool = Field(..., description="a policy of that name exists now")
    delete: bool = Field(..., description="this previews deleting it")
    changed: bool
    current: dict[str, Any] | None = Field(..., description="the policy now (null: none)")
    proposed: dict[str, Any] | None = Field(..., description="the policy once applied (null: deleted)")
    diff: str = Field(..., description="unified diff of current -> proposed (indented JSON, sorted keys)")
    agents: list[PolicyEffect] = Field(..., description="agents whose compiled selection would change")


@router.post("/policies/{name}/preview", response_model=PolicyPreview, dependencies=CONFIG,
             responses={**FORBIDDEN, **NO_POLICY, **BODY})  # fmt: skip
def preview_policy(
    request: Request, name: str, policy: PolicyBody | None = None, delete: bool = False
) -> dict[str, Any]:
    """The diff of a policy and which agents would capture which VMs more or less, before putting it (or,
    with ``delete=true`` and no body, before deleting it). Refused (403) when the PUT or DELETE would be.
    Stores nothing."""
    ctl = ctl_of(request)
    old = ctl.policies.get(name)
    if delete:
        if old is None:
            raise HTTPException(404, f"no policy called {name!r}")
        parsed = None
        reason = policy_refusal(ctl.inventory(), old, _scope(request, Permission.CONFIG_WRITE))
    else:
        if policy is None:
            raise invalid("body", "policy", "send the proposed policy, or preview its deletion (delete=true)")
        parsed = _parse_policy(name, policy)
        reason = _policy_put_refusal(request, parsed, old)
    if reason is not None:
        raise HTTPException(403, reason)
    return policy_preview(ctl.inventory(), ctl.policies.all(), parsed, name, ctl.registry.all(),
                          ctl.heartbeats.seen_macs())  # fmt: skip


# -- compilation ----------------------------------------------------------------------------------------
@router.post("/controller/sync", dependencies=[Depends(require(Permission.INVENTORY_SYNC))], responses=FORBIDDEN)
def sync(request: Request) -> dict[str, Any]:
    """Recompile policies against the inventory now (also runs every ``controller.sync_s`` on change)."""
    return ctl_of(request).sync()


@router.get("/controller/compiled", dependencies=READ, responses=FORBIDDEN)
def compiled(request: Request) -> dict[str, Any]:
    """Per agent: what the policies compiled to (interfaces, MACs, BPF, VMs covered)."""
    return ctl_of(request).compiled()
