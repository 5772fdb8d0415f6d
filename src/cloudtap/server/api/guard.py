"""Route guards: every API route declares what it needs as a FastAPI dependency.

``Depends(require(Permission.FLOWS_READ))`` authenticates the caller (``Authorization: Bearer`` API
token, or the console's session cookie plus ``X-CSRF-Token`` on state-changing requests), checks the
permission and records the principal and its project scope on ``request.state``. ``public`` marks
the few routes anyone may call; ``agent_only`` the routes agents call with their own credential.
A route with none of them fails the route-declaration test.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from cloudtap.server.access.credentials import digest, same
from cloudtap.server.access.permissions import AGENT, AUTHENTICATED, PUBLIC, Permission
from cloudtap.server.access.principal import Principal, RoleBinding
from cloudtap.server.access.scope import Scope, project_ids
from cloudtap.server.access.service import AccessService, AuthError

log = logging.getLogger(__name__)
SESSION_COOKIE = "cloudtap_session"
CSRF_COOKIE = "cloudtap_csrf"
CSRF_HEADER = "X-CSRF-Token"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
#: The principal of a server running with ``auth.enabled: false`` (development on loopback only).
ANONYMOUS_ADMIN = Principal("anonymous", "none", (RoleBinding("admin"),))
#: The principal of a Prometheus scrape with ``auth.metrics_token``.
METRICS_SCRAPER = Principal("metrics", "metrics-token", (RoleBinding("viewer"),))


def bearer(request: Request) -> str | None:
    """The ``Authorization: Bearer`` credential, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def unauthorized(reason: str) -> HTTPException:
    """401 with the challenge."""
    return HTTPException(401, reason, headers={"WWW-Authenticate": 'Bearer realm="cloudtap"'})


def authenticate(request: Request) -> Principal:
    """Who is calling: an API token, else a session (CSRF-checked on unsafe methods); 401 otherwise."""
    state = request.app.state
    if not state.settings.auth.enabled:
        return ANONYMOUS_ADMIN
    access: AccessService = state.access
    token = bearer(request)
    try:
        if token is not None:
            return access.verify_token(token)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            principal, csrf_digest = access.verify_session(cookie)
            if request.method not in _SAFE:
                sent = request.headers.get(CSRF_HEADER)
                if not sent or not same(digest(sent), csrf_digest):
                    raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header (send the {CSRF_COOKIE} cookie's value)")
            return principal
    except AuthError as exc:
        raise unauthorized(exc.reason) from exc
    raise unauthorized("authentication required: send 'Authorization: Bearer <token>' (cloudtap login) or log in")


class Requirement:
    """A dependency that declares and enforces a route's permission.

    Attributes:
        permission: a :class:`Permission`, :data:`PUBLIC` or :data:`AGENT`.
    """

    def __init__(self, permission: Permission | str) -> None:
        self.permission = permission

    def __repr__(self) -> str:
        return f"require({self.permission})"

    async def __call__(self, request: Request) -> Principal | None:
        if self.permission == PUBLIC:
            return None
        if self.permission == AGENT:
            return await run_in_threadpool(authenticate_agent, request)
        if self.permission == Permission.METRICS_READ and _metrics_token(request):
            request.state.principal = METRICS_SCRAPER
            return METRICS_SCRAPER
        principal = await run_in_threadpool(authenticate, request)
        request.state.principal = principal
        if self.permission == AUTHENTICATED:
            return principal
        permission = Permission(self.permission)
        projects = principal.projects_for(permission)
        if projects is not None and not projects:
            raise HTTPException(403, f"{principal.name} lacks the {permission.value} permission")
        request.state.permission = permission
        request.state.scope = Scope(None) if projects is None else Scope(project_ids(projects, _names(request)), projects)
        return principal


def _metrics_token(request: Request) -> bool:
    """True when the caller sent the static ``auth.metrics_token`` (constant-time check)."""
    configured = request.app.state.settings.auth.metrics_token
    return bool(configured) and same(bearer(request), configured)


def _names(request: Request) -> Any:
    names = getattr(request.app.state, "names", None)
    if names is None:
        from cloudtap.server.api.routes.inventory import install

        install(request.app)
        names = getattr(request.app.state, "names", None)
    return names


def authenticate_agent(request: Request) -> Principal:
    """The agent behind the per-agent credential (``app.state.controller.authenticate_agent``); 401/403."""
    from cloudtap.server.api.routes.controller import ctl_of
    from cloudtap.server.controller.auth import Refusal

    try:
        record = ctl_of(request).authenticate_agent(bearer(request))
    except Refusal as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    request.state.agent_id = record.id
    principal = Principal(f"agent:{record.id}", "agent")
    request.state.principal = principal
    return principal


_CACHE: dict[str, Requirement] = {}


def require(permission: Permission | str) -> Requirement:
    """The (shared) guard for ``permission``."""
    key = str(permission)
    if key not in _CACHE:
        _CACHE[key] = Requirement(permission)
    return _CACHE[key]


def principal_of(request: Request) -> Principal:
    """The principal a guard recorded (routes without a user guard have none: a 500, fail closed)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise RuntimeError(f"route {request.url.path} has no permission declared")
    return principal  # type: ignore[no-any-return]


def scope_of(request: Request) -> Scope:
    """The project scope a guard recorded; fails closed when none was."""
    scope = getattr(request.state, "scope", None)
    if scope is None:
        raise RuntimeError(f"route {request.url.path} reads data without a permission declared")
    return scope  # type: ignore[no-any-return]
