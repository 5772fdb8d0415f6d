"""Distribution API: destinations, distribution policies (CRUD and preview), and the dry-run of any policy.

Reading needs ``fleet:read``; every change, preview and dry-run ``config:write`` (operators). Destinations
serve every project: changing them needs a grant on every project. A project-bound operator writes, previews
and dry-runs only policies limited to one of their projects (as for capture policies,
:func:`~cloudtap.server.controller.project_scope.policy_refusal`), and the dry-run reads the flows through
their scoped store. Every change, and every refusal of one, is audited. See docs/controller.md.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudtap.server.access.permissions import Permission
from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.analyse.window import resolve_window
from cloudtap.server.api.deps import StoreDep
from cloudtap.server.api.guard import principal_of, require
from cloudtap.server.api.routes._checked import CheckedRoute
from cloudtap.server.api.routes._controller_app import FORBIDDEN, ctl_of, invalid
from cloudtap.server.api.routes._errors import BAD_JSON, INVALID, ErrorText
from cloudtap.server.audit import audit_of
from cloudtap.server.controller.auth import Refusal
from cloudtap.server.controller.distribution import Destination, DistributionPolicy
from cloudtap.server.controller.distribution_preview import distribution_preview
from cloudtap.server.controller.dry_run import dry_run
from cloudtap.server.controller.dry_run_selection import select_vms
from cloudtap.server.controller.policy import Policy
from cloudtap.server.controller.project_scope import policy_refusal, unrestricted_refusal

router = APIRouter(tags=["distribution"], route_class=CheckedRoute)
READ = [Depends(require(Permission.FLEET_READ))]
CONFIG = [Depends(require(Permission.CONFIG_WRITE))]
BODY: dict[int | str, dict[str, Any]] = {**BAD_JSON, **INVALID}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorText, "description": "no such destination or policy"}
}
NO_STORE: dict[int | str, dict[str, Any]] = {503: {"model": ErrorText, "description": "no flow store"}}
IN_USE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorText, "description": "a policy still sends to it"}
}


def _audit(request: Request, action: str, outcome: str = "ok", **detail: Any) -> None:
    audit_of(request.app).record(action, principal_of(request).name, outcome, **detail)


def _scope(request: Request) -> frozenset[str] | None:
    return principal_of(request).projects_for(Permission.CONFIG_WRITE)


def _deny(request: Request, action: str, reason: str | None, **detail: Any) -> None:
    if reason is not None:
        _audit(request, action, "refused", reason=reason, **detail)
        raise HTTPException(403, reason)


def _refused(exc: Refusal) -> HTTPException:
    if exc.status == 422:
        return invalid("body", "destinations", exc.reason)
    return HTTPException(exc.status, exc.reason)


def _named(model: type[BaseModel], name: str, body: BaseModel, where: str = "body") -> Any:
    """``model`` from ``body`` with the path's name (a bad name is a 422 on the path)."""
    try:
        return model.model_validate({**body.model_dump(exclude_unset=True), "name": name})
    except ValidationError as exc:
        errors = [{**e, "loc": ("path", *e["loc"]) if e["loc"] == ("name",) else (where, *e["loc"])}
                  for e in exc.errors(include_url=False)]  # fmt: skip
        raise RequestValidationError(errors) from None


# -- destinations ---------------------------------------------------------------------------------------
class DestinationBody(Destination):
    """A destination as sent to ``PUT /destinations/{name}`` (the path's name wins)."""

    name: str | None = Field(None, description="ignored: the name in the path wins")  # type: ignore[assignment]


@router.get("/destinations", dependencies=READ, responses=FORBIDDEN)
def list_destinations(request: Request) -> list[dict[str, Any]]:
    """Every destination, with the distribution policies sending to it."""
    dist = ctl_of(request).distribution
    return [{**d.model_dump(mode="json"), "used_by": dist.users_of(d.name)} for d in dist.destinations()]


@router.put("/destinations/{name}", dependencies=CONFIG, responses={**FORBIDDEN, **BODY})
def put_destination(request: Request, name: str, body: DestinationBody) -> dict[str, Any]:
    """Create or replace a destination (it serves every project: needs config:write on every project);
    agents whose rules use it get a new config version."""
    _deny(
        request,
        "destination.put",
        unrestricted_refusal(f"destination {name!r}", _scope(request)),
        destination=name,
    )
    dest = _named(Destination, name, body)
    ctl = ctl_of(request)
    replaced = ctl.distribution.destination(name) is not None
    answer = ctl.put_distribution(dest)
    _audit(request, "destination.put", destination=name, doc=dest.model_dump(mode="json"), replaced=replaced)
    return answer


@router.delete(
    "/destinations/{name}", dependencies=CONFIG, responses={**FORBIDDEN, **NOT_FOUND, **IN_USE, **INVALID}
)
def delete_destination(request: Request, name: str) -> dict[str, Any]:
    """Delete a destination no policy sends to (409 otherwise)."""
    _deny(request, "destination.delete", unrestricted_refusal(f"destination {name!r}", _scope(request)),
          destination=name)  # fmt: skip
    try:
        answer = ctl_of(request).delete_distribution("destination", name)
    except Refusal as exc:
        _audit(request, "destination.delete", "failed", destination=name, reason=exc.reason)
        raise _refused(exc) from exc
    _audit(request, "destination.delete", destination=name)
    return answer


# -- distribution policies ------------------------------------------------------------------------------
class DistributionBody(DistributionPolicy):
    """A distribution policy as sent to ``PUT /distribution/{name}`` (the path's name wins)."""

    name: str | None = Field(None, description="ignored: the name in the path wins")  # type: ignore[assignment]


def _put_refusal(
    request: Request, new: DistributionPolicy | None, old: DistributionPolicy | None
) -> str | None:
    allowed, snap = _scope(request), ctl_of(request).inventory()
    for doc in (new, old):
        reason = policy_refusal(snap, doc, allowed) if doc is not None else None  # type: ignore[arg-type]
        if reason is not None:
            return reason
    return None


def _compiled_rules(request: Request, name: str) -> list[dict[str, Any]]:
    """Per agent, the rule ``name`` compiled to."""
    ctl = ctl_of(request)
    comp = ctl.broker_compilation
    out = []
    for agent in ctl.registry.all():
        compiled = comp.agents.get(agent.id) if comp is not None else None
        for rule in compiled.rules if compiled else []:
            if rule.name == name:
                out.append({"agent_id": agent.id, "agent": agent.name, "host": agent.hostname, **rule.section(),
                            "vms": rule.vms})  # fmt: skip
    return out


@router.get("/distribution", dependencies=READ, responses=FORBIDDEN)
def list_distribution(request: Request) -> list[dict[str, Any]]:
    """Every distribution policy, by priority, with the number of agents and VMs it applies to."""
    out = []
    for p in ctl_of(request).distribution.policies():
        rules = _compiled_rules(request, p.name)
        out.append(
            {**p.model_dump(mode="json"), "agents": len(rules), "vms": sum(len(r["vms"]) for r in rules)}
        )
    return out


@router.get("/distribution/{name}", dependencies=READ, responses={**FORBIDDEN, **NOT_FOUND, **INVALID})
def show_distribution(request: Request, name: str) -> dict[str, Any]:
    """One distribution policy and, per agent, the rule it compiled to (interfaces, MACs, VMs)."""
    ctl = ctl_of(request)
    policy = ctl.distribution.policy(name)
    if policy is None:
        raise HTTPException(404, f"no distribution policy called {name!r}")
    missing = (ctl.broker_compilation.missing if ctl.broker_compilation else {}).get(name, [])
    return {"policy": policy.model_dump(mode="json"), "compiled": _compiled_rules(request, name),
            "missing_destinations": missing}  # fmt: skip


@router.put("/distribution/{name}", dependencies=CONFIG, responses={**FORBIDDEN, **BODY})
def put_distribution(request: Request, name: str, body: DistributionBody) -> dict[str, Any]:
    """Create or replace a distribution policy (its destinations must exist: 422 otherwise); recompiles at
    once. A project-scoped caller may only write a policy limited to one of their projects."""
    parsed = _named(DistributionPolicy, name, body)
    ctl = ctl_of(request)
    old = ctl.distribution.policy(name)
    _deny(request, "distribution.put", _put_refusal(request, parsed, old), policy=name)
    try:
        answer = ctl.put_distribution(parsed)
    except Refusal as exc:
        _audit(request, "distribution.put", "failed", policy=name, reason=exc.reason)
        raise _refused(exc) from exc
    _audit(
        request, "distribution.put", policy=name, doc=parsed.model_dump(mode="json"), replaced=old is not None
    )
    return answer


@router.delete("/distribution/{name}", dependencies=CONFIG, responses={**FORBIDDEN, **NOT_FOUND, **INVALID})
def delete_distribution(request: Request, name: str) -> dict[str, Any]:
    """Delete a distribution policy; recompiles at once."""
    ctl = ctl_of(request)
    old = ctl.distribution.policy(name)
    _deny(request, "distribution.delete", _put_refusal(request, None, old), policy=name)
    try:
        answer = ctl.delete_distribution("policy", name)
    except Refusal as exc:
        _audit(request, "distribution.delete", "failed", policy=name, reason=exc.reason)
        raise _refused(exc) from exc
    _audit(request, "distribution.delete", policy=name, doc=old.model_dump(mode="json") if old else None)
    return answer


@router.post(
    "/distribution/{name}/preview", dependencies=CONFIG, responses={**FORBIDDEN, **NOT_FOUND, **BODY}
)
def preview_distribution(
    request: Request, name: str, body: DistributionBody | None = None, delete: bool = False
) -> dict[str, Any]:
    """The diff of a distribution policy and which agents' rules would change (VMs added or removed), before
    putting it (or, with ``delete=true`` and no body, deleting it). Refused (403) when the change would be.
    Stores nothing."""
    ctl = ctl_of(request)
    old = ctl.distribution.policy(name)
    if delete:
        if old is None:
            raise HTTPException(404, f"no distribution policy called {name!r}")
        parsed = None
    elif body is None:
        raise invalid("body", "policy", "send the proposed policy, or preview its deletion (delete=true)")
    else:
        parsed = _named(DistributionPolicy, name, body)
    reason = _put_refusal(request, parsed, old)
    if reason is not None:
        raise HTTPException(403, reason)
    dist = ctl.distribution
    return distribution_preview(ctl.inventory(), dist.policies(), dist.destinations(), parsed, name,
                                ctl.registry.all(), ctl.heartbeats.seen_macs())  # fmt: skip


# -- dry-run --------------------------------------------------------------------------------------------
class DryRunBody(BaseModel):
    """A policy to try against the stored flows of a window; nothing is applied."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["capture", "storage", "distribution"] = Field(
        ...,
        description="capture or storage (a capture policy, storage: with action.store_packets), distribution",
    )
    policy: dict[str, Any] = Field(
        ..., description="the policy document, as PUT /policies or /distribution takes"
    )
    time_from: str | int | float = Field(
        "-1h", description="ISO 8601, epoch, now, -1h... (default: the last hour)"
    )
    time_to: str | int | float | None = Field(None, description="default: now")
    destinations: list[Destination] = Field(
        default_factory=list,
        description="destinations not defined yet (or replacing defined ones) for this run",
    )
    max_uplink_bps: int | None = Field(
        None,
        ge=0,
        description="the host fuse's threshold for every host (default: each agent's group overlay)",
    )


def _parse(kind: str, doc: dict[str, Any]) -> Policy | DistributionPolicy:
    model: type[Policy] | type[DistributionPolicy] = DistributionPolicy if kind == "distribution" else Policy
    try:
        policy = model.model_validate(doc)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", "policy", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None  # fmt: skip
    if kind == "storage" and not policy.action.store_packets:  # type: ignore[union-attr]
        raise invalid(
            "body", "policy", "a storage dry-run takes a capture policy with action.store_packets: true"
        )
    return policy


def _fuse_limits(request: Request, override: int | None) -> dict[str, int]:
    ctl = ctl_of(request)
    out = {"": int(override or 0)}  # agents not registered (imports): only the request's threshold
    for agent in ctl.registry.all():
        fuse = (ctl.groups.get(agent.group).overlay.get("broker") or {}).get("fuse") or {}
        out[agent.id] = int(override if override is not None else fuse.get("max_uplink_bps") or 0)
    return out


@router.post("/policies/dry-run", dependencies=CONFIG, responses={**FORBIDDEN, **BODY, **NO_STORE})
def dry_run_policy(request: Request, body: DryRunBody, store: StoreDep) -> dict[str, Any]:
    """What a capture, storage or distribution policy would have matched over a past window (default: the
    last hour), from the stored flows: per agent the VMs and interfaces, flows, packets, bytes; for
    distribution also the forwarded bytes and peak bps per destination, and whether a destination's cap or a
    host's fuse would have tripped. Reads through the caller's project scope; applies nothing."""
    policy = _parse(body.kind, body.policy)
    if store is None:
        raise HTTPException(503, "this server has no flow store: a dry-run reads the stored flows")
    ctl = ctl_of(request)
    snap = ctl.inventory()
    reason = policy_refusal(snap, policy, _scope(request))  # type: ignore[arg-type]
    if reason is not None:
        raise HTTPException(403, reason)
    try:
        window = resolve_window(body.time_from, body.time_to)
    except AnalysisError as exc:
        raise invalid("body", exc.field or "time_from", exc.message) from exc
    vm_id = getattr(getattr(request.app.state, "inventory", None), "id_of", None)  # the store's inventory ids
    sel = select_vms(snap, policy, ctl.registry.all(), ctl.policies.all(), ctl.heartbeats.seen_macs(),
                     (lambda key: int(vm_id("vm", key))) if vm_id else None)  # fmt: skip
    destinations = {d.name: d for d in ctl.distribution.destinations()} | {
        d.name: d for d in body.destinations
    }
    return dry_run(
        store, body.kind, policy, sel, window, destinations, _fuse_limits(request, body.max_uplink_bps)
    )
