"""Controller API: agents register, heartbeat, fetch config, long-poll commands; groups and policies.

Agent endpoints take the agent's token as ``Authorization: Bearer <token>`` (or ``X-Cloudtap-Token``);
every refusal (401/403/404: ``{"detail": "<why>"}``) says why; bad input is a 422 in FastAPI's shape
(``detail[].loc`` names the field). Every status a route returns is in its ``responses``. See docs/controller.md.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError

from cloudtap.errors import ConfigError
from cloudtap.inventory.model import Snapshot
from cloudtap.server.api.routes._errors import BAD_JSON, INVALID, ErrorText, unprocessable_item
from cloudtap.server.controller.auth import Refusal
from cloudtap.server.controller.policy import Policy
from cloudtap.server.controller.registry import AgentRecord
from cloudtap.server.controller.service import Controller
from cloudtap.server.controller.status import HeartbeatReport
from cloudtap.server.settings import ServerSettings

log = logging.getLogger(__name__)


def controller_db_path(settings: ServerSettings) -> Path:
    """Where the controller's SQLite file lives: ``controller.db_path``, else in the chDB data directory."""
    if settings.controller.db_path is not None:
        return settings.controller.db_path
    dsn = settings.storage.dsn
    if dsn.startswith("chdb://") and len(dsn) > len("chdb://"):
        return Path(dsn[len("chdb://") :]) / "controller.sqlite"
    return Path("/var/lib/cloudtap/controller.sqlite")


def build_controller(app: FastAPI) -> Controller:
    """A Controller for ``app``: its settings, store, and inventory (``app.state.inventory`` if set, read at
    each use, else ``controller.inventory_file``)."""
    settings: ServerSettings = app.state.settings
    cfg = settings.controller
    static = None
    if cfg.inventory_file is not None:
        from cloudtap.server.controller.inventory_file import SnapshotFile

        static = SnapshotFile(cfg.inventory_file)

    def inventory() -> Snapshot:
        source = getattr(app.state, "inventory", None)
        if source is not None:
            return source.current() if hasattr(source, "current") else source()  # type: ignore[no-any-return]
        if static is not None:
            return static.current()
        return Snapshot(source="none", taken_at=0)

    path: Path | str = controller_db_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    except OSError as exc:
        log.warning("controller: cannot create %s (%s); controller state is kept in memory only", path, exc)
        path = ":memory:"
    return Controller(cfg, path, inventory, getattr(app.state, "store", None), settings.storage.database)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    ctl = get_controller_app(app)
    ctl.start()
    try:
        yield
    finally:
        ctl.close()
        app.state.controller = None


def get_controller_app(app: FastAPI) -> Controller:
    """The app's controller (built on first use)."""
    ctl = getattr(app.state, "controller", None)
    if ctl is None:
        ctl = build_controller(app)
        app.state.controller = ctl
    return ctl  # type: ignore[no-any-return]


def ctl_of(request: Request) -> Controller:
    return get_controller_app(request.app)


def unsafe_json(doc: Any) -> dict[str, Any] | None:
    """The first value of a parsed JSON body that could not be stored or answered back, as a 422 item:
    NaN/Infinity (``json.loads`` accepts them, JSON answers cannot carry them) or text with a lone
    surrogate (``"\\ud800"``: not UTF-8). ``None`` when the body is clean."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [(("body",), doc)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return {"loc": list(loc), "msg": "not a finite number", "type": "finite_number"}
        if isinstance(value, str) and not _utf8(value):
            return {"loc": list(loc), "msg": _SURROGATE, "type": "string_unicode"}
        if isinstance(value, dict):
            for key, item in value.items():
                if not _utf8(key):
                    return {"loc": [*loc, "<key>"], "msg": _SURROGATE, "type": "string_unicode"}
                stack.append(((*loc, key), item))
        elif isinstance(value, list):
            stack.extend(((*loc, i), item) for i, item in enumerate(value))
    return None


_SURROGATE = "text with a lone surrogate (not UTF-8)"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class CheckedRoute(APIRoute):
    """A route whose JSON body is refused (422, FastAPI's shape) when it holds NaN/Infinity or lone
    surrogates: such values would poison the stored state and every later answer (a 5xx)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:  # no body read: nothing to check
            return handler

        async def checked(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                body = await request.body()  # cached on the request: the route reads it again
                try:
                    doc = json.loads(body) if body else None
                except (ValueError, RecursionError):
                    doc = None  # not JSON: FastAPI answers 400 / 422 itself
                problem = unsafe_json(doc)
                if problem is not None:
                    return JSONResponse({"detail": [problem]}, status_code=422)
            return await handler(request)

        return checked


router = APIRouter(prefix="/api/v1", tags=["controller"], lifespan=lifespan, route_class=CheckedRoute)

TokenHeader = Annotated[str | None, Header(alias="Authorization")]
AltToken = Annotated[str | None, Header(alias="X-Cloudtap-Token")]


def _token(authorization: str | None, alt: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return alt


#: documented error answers (``ErrorText``: ``{"detail": "<why>"}``)
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorText, "description": "token missing"},
    403: {"model": ErrorText, "description": "token wrong (or none configured for this agent)"},
}
UNKNOWN_AGENT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorText, "description": "unknown agent id: register first (the agent registers again)"},
}
NO_AGENT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorText, "description": "no agent with that id, name or host name"},
}
NO_COMMAND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorText, "description": "no such command"}}
NO_POLICY: dict[int | str, dict[str, Any]] = {404: {"model": ErrorText, "description": "no such policy"}}
#: routes with a JSON body: 400 when it is not JSON, 422 when a field is bad
BODY: dict[int | str, dict[str, Any]] = {**BAD_JSON, **INVALID}


def invalid(where: str, field: str, message: str, allowed: list[str] | None = None) -> HTTPException:
    """A 422 in FastAPI's shape for one bad field."""
    return HTTPException(422, detail=[unprocessable_item(where, field, message, allowed)])


def _refused(exc: Refusal) -> HTTPException:
    if exc.status in (400, 422):  # bad input: FastAPI's 422 shape, like every other route
        return invalid("body", "registration", exc.reason)
    return HTTPException(exc.status, exc.reason)


def _agent(request: Request, agent_id: str, authorization: str | None, alt: str | None) -> AgentRecord:
    try:
        return ctl_of(request).authorize(agent_id, _token(authorization, alt))
    except Refusal as exc:
        raise _refused(exc) from exc


# -- agent endpoints ---------------------------------------------------------------------------------
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


class RegisterAnswer(BaseModel):
    agent_id: str
    name: str
    group: str
    heartbeat_s: float
    config_version: int


@router.post("/agents/register", response_model=RegisterAnswer, responses={**AUTH, **BODY})
async def register(
    request: Request,
    body: RegisterRequest,
    authorization: TokenHeader = None,
    x_cloudtap_token: AltToken = None,
) -> RegisterAnswer:
    """Register (or re-register) an agent; the server assigns its id (stable per host name + machine id)."""
    peer = request.client.host if request.client else ""
    try:
        answer = ctl_of(request).register(_token(authorization, x_cloudtap_token), body.model_dump(), peer)
    except Refusal as exc:
        raise _refused(exc) from exc
    return RegisterAnswer(**answer)


class HeartbeatAnswer(BaseModel):
    config_version: int = Field(..., description="fetch GET /agents/{id}/config when this differs from yours")
    heartbeat_s: float
    server_time: float


@router.post("/agents/{agent_id}/heartbeat", response_model=HeartbeatAnswer,
             responses={**AUTH, **UNKNOWN_AGENT, **BODY})  # fmt: skip
async def heartbeat(
    request: Request, agent_id: str, report: HeartbeatReport,
    authorization: TokenHeader = None, x_cloudtap_token: AltToken = None,
) -> HeartbeatAnswer:  # fmt: skip
    """Status every ``heartbeat_s``; the answer says the current config version."""
    rec = _agent(request, agent_id, authorization, x_cloudtap_token)
    answer = HeartbeatAnswer(**ctl_of(request).heartbeat(rec, report))
    _teach_inventory(request, rec, report)
    return answer


def _teach_inventory(request: Request, rec: AgentRecord, report: HeartbeatReport) -> None:
    """Without a cloud API, the inventory learns hosts and VM interfaces from heartbeats (docs/inventory.md)."""
    service = getattr(request.app.state, "inventory_service", None)
    learner = getattr(service, "agents", None)
    if learner is None:
        return
    vm_ports = [{"name": i.name, "mac": i.mac, "domain": i.domain or ""} for i in report.interfaces if i.mac]
    try:
        address = str(ipaddress.ip_address(rec.address)) if rec.address else ""
    except ValueError:
        address = ""
    learner.update({"agent_id": rec.name, "host": rec.hostname, "address": address, "interfaces": vm_ports})


@router.get("/agents/{agent_id}/config", responses={**AUTH, **UNKNOWN_AGENT, **INVALID})
async def agent_config(
    request: Request, agent_id: str, authorization: TokenHeader = None, x_cloudtap_token: AltToken = None
) -> dict[str, Any]:
    """The agent's config document: ``{version, group, overlay, policy, apply}``."""
    rec = _agent(request, agent_id, authorization, x_cloudtap_token)
    return ctl_of(request).config_for(rec)


@router.get("/agents/{agent_id}/commands", responses={**AUTH, **UNKNOWN_AGENT, **INVALID})
async def agent_commands(
    request: Request, agent_id: str, wait: Annotated[float, Query(ge=0, le=60)] = 25.0,
    authorization: TokenHeader = None, x_cloudtap_token: AltToken = None,
) -> dict[str, Any]:  # fmt: skip
    """Long-poll: answers as soon as a command is queued for the agent, or ``[]`` after ``wait`` seconds."""
    rec = _agent(request, agent_id, authorization, x_cloudtap_token)
    cmds = await ctl_of(request).commands.wait(rec.id, wait)
    return {"commands": [c.public() for c in cmds]}


class CommandResult(BaseModel):
    ok: bool
    detail: str = ""


@router.post("/agents/{agent_id}/commands/{command_id}/result", responses={
    **AUTH, 404: {"model": ErrorText, "description": "unknown agent id, or no such command"}, **BODY})  # fmt: skip
async def command_result(
    request: Request, agent_id: str, command_id: int, result: CommandResult,
    authorization: TokenHeader = None, x_cloudtap_token: AltToken = None,
) -> dict[str, Any]:  # fmt: skip
    """The agent reports what a command did."""
    _agent(request, agent_id, authorization, x_cloudtap_token)
    cmd = ctl_of(request).commands.done(command_id, result.ok, result.detail)
    if cmd is None:
        raise HTTPException(404, f"no command {command_id}")
    return {"recorded": True}


# -- administration ---------------------------------------------------------------------------------
def _find(request: Request, key: str) -> AgentRecord:
    rec = ctl_of(request).registry.find(key)
    if rec is None:
        raise HTTPException(404, f"no agent with id, name or host name {key!r}")
    return rec


@router.get("/agents")
def list_agents(request: Request) -> list[dict[str, Any]]:
    """Every registered agent with liveness and last-minute figures."""
    return ctl_of(request).fleet.top("cpu", "1m", limit=100000)


@router.get("/agents/{agent_id}", responses={**NO_AGENT, **INVALID})
def agent_detail(request: Request, agent_id: str) -> dict[str, Any]:
    """One agent (by id, name or host name): record, latest status, config document."""
    ctl = ctl_of(request)
    rec = _find(request, agent_id)
    latest = ctl.heartbeats.latest(rec.id)
    return {"agent": rec.__dict__, "stale": ctl.fleet.is_stale(rec),
            "status": latest.report.model_dump() if latest else None, "config": ctl.config_for(rec)}  # fmt: skip


@router.delete("/agents/{agent_id}", responses={**NO_AGENT, **INVALID})
def delete_agent(request: Request, agent_id: str) -> dict[str, Any]:
    """Forget an agent (it registers again if it is still running)."""
    ctl = ctl_of(request)
    rec = _find(request, agent_id)
    ctl.registry.remove(rec.id)
    ctl.heartbeats.forget(rec.id)
    return {"deleted": rec.id}


class GroupChange(BaseModel):
    group: str = Field(..., min_length=1)


@router.put("/agents/{agent_id}/group", responses={**NO_AGENT, **BODY})
def set_agent_group(request: Request, agent_id: str, body: GroupChange) -> dict[str, Any]:
    """Move an agent to another group; its config version changes if the overlay differs."""
    rec = ctl_of(request).set_group(_find(request, agent_id).id, body.group)
    return {"agent_id": rec.id, "group": rec.group, "config_version": rec.config_version}


@router.post("/agents/{agent_id}/capture/{action}", responses={**NO_AGENT, **INVALID})
def agent_capture(request: Request, agent_id: str, action: Literal["start", "stop"]) -> dict[str, Any]:
    """Start or stop capture on one agent (delivered through its long-poll: applied within a second)."""
    cmd = ctl_of(request).commands.put(_find(request, agent_id).id, action)
    return {"command": cmd.id, "agent_id": cmd.agent_id, "action": action}


@router.post("/groups/{name}/capture/{action}", responses=INVALID)
def group_capture(request: Request, name: str, action: Literal["start", "stop"]) -> dict[str, Any]:
    """Start or stop capture on every agent of a group."""
    ctl = ctl_of(request)
    cmds = [ctl.commands.put(a.id, action).id for a in ctl.registry.all() if a.group == name]
    return {"group": name, "action": action, "commands": cmds}


@router.get("/commands/{command_id}", responses={**NO_COMMAND, **INVALID})
def command_status(request: Request, command_id: int) -> dict[str, Any]:
    """Where a command is: issued, delivered, done (with the agent's answer)."""
    cmd = ctl_of(request).commands.get(command_id)
    if cmd is None:
        raise HTTPException(404, f"no command {command_id}")
    return cmd.__dict__


@router.get("/groups")
def list_groups(request: Request) -> list[dict[str, Any]]:
    """Every group with its overlay, version and agent count."""
    ctl = ctl_of(request)
    agents = ctl.registry.all()
    return [{**g.__dict__, "agents": sum(a.group == g.name for a in agents)} for g in ctl.groups.all()]


class GroupConfig(BaseModel):
    overlay: dict[str, Any] = Field(
        default_factory=dict, description="partial AgentConfig, e.g. {limits: {max_pps: 1000}}"
    )
    description: str | None = None


@router.put("/groups/{name}/config", responses=BODY)
def set_group_config(request: Request, name: str, body: GroupConfig) -> dict[str, Any]:
    """Replace a group's config overlay (422 names a bad key); answers each key's apply mode (hot / restart)."""
    try:
        return ctl_of(request).set_group_config(name, body.overlay, body.description)
    except ConfigError as exc:
        raise invalid("body", "overlay", str(exc)) from exc


@router.get("/policies")
def list_policies(request: Request) -> list[dict[str, Any]]:
    """Every policy, by priority."""
    return [p.model_dump() for p in ctl_of(request).policies.all()]


class PolicyBody(Policy):
    """A policy as sent to ``PUT /policies/{name}``: the name is optional (the path's wins)."""

    name: str | None = Field(None, description="ignored: the name in the path wins")  # type: ignore[assignment]


@router.put("/policies/{name}", responses=BODY)
def put_policy(request: Request, name: str, policy: PolicyBody) -> dict[str, Any]:
    """Create or replace a policy (the name in the path wins); recompiles at once."""
    try:
        parsed = Policy.model_validate({**policy.model_dump(), "name": name})
    except ValidationError as exc:
        errors = [{**e, "loc": ("path", *e["loc"]) if e["loc"] == ("name",) else ("body", *e["loc"])}
                  for e in exc.errors(include_url=False)]  # fmt: skip
        raise RequestValidationError(errors) from None
    return ctl_of(request).put_policy(parsed)


@router.delete("/policies/{name}", responses={**NO_POLICY, **INVALID})
def delete_policy(request: Request, name: str) -> dict[str, Any]:
    """Delete a policy; recompiles at once."""
    try:
        return ctl_of(request).delete_policy(name)
    except Refusal as exc:
        raise _refused(exc) from exc


@router.post("/controller/sync")
def sync(request: Request) -> dict[str, Any]:
    """Recompile policies against the inventory now (also runs every ``controller.sync_s`` on change)."""
    return ctl_of(request).sync()


@router.get("/controller/compiled")
def compiled(request: Request) -> dict[str, Any]:
    """Per agent: what the policies compiled to (interfaces, MACs, BPF, VMs covered)."""
    return ctl_of(request).compiled()
