"""/api/v1/auth: log in and out (browser sessions), who am I, and API tokens.

A browser logs in with ``POST /login`` and gets an HttpOnly ``cloudtap_session`` cookie plus a
readable ``cloudtap_csrf`` cookie whose value it echoes as ``X-CSRF-Token`` on state-changing
requests. The CLI and automation get a named, expiring API token from ``POST /token`` (password) or
``POST /tokens`` (already logged in) and send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.server.access.permissions import AUTHENTICATED, PUBLIC, Permission
from cloudtap.server.access.principal import Principal
from cloudtap.server.access.service import AccessService, AuthError, Session
from cloudtap.server.api.deps import PrincipalDep
from cloudtap.server.api.guard import CSRF_COOKIE, SESSION_COOKIE, require
from cloudtap.server.api.routes._errors import BAD_JSON, INVALID, ErrorText
from cloudtap.server.audit import audit_of

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
_401: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorText, "description": "wrong or missing credentials"}, **BAD_JSON, **INVALID
}


class LoginIn(BaseModel):
    """A user name and password."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class TokenIn(BaseModel):
    """A new API token: a name to recognise it by, and its lifetime."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    days: float | None = Field(None, gt=0, le=3650, description="lifetime; default auth.token_days")


class PasswordTokenIn(LoginIn):
    """Log in and get an API token in one call (``cloudtap login``)."""

    name: str = Field("cli", min_length=1, max_length=128)
    days: float | None = Field(None, gt=0, le=3650)


class TokenOut(BaseModel):
    """A new token: shown once, never again."""

    token: str
    id: str
    name: str
    user: str
    expires_at: float


def access_of(request: Request) -> AccessService:
    """The app's access service."""
    return request.app.state.access  # type: ignore[no-any-return]


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _login(request: Request, username: str, password: str) -> Principal:
    try:
        return access_of(request).login(username, password)
    except AuthError as exc:
        audit_of(request.app).record("auth.login", None, "refused", user=username, client=_client(request))
        raise HTTPException(401, exc.reason) from exc


def _secure(request: Request) -> bool:
    configured = request.app.state.settings.auth.cookie_secure
    return request.url.scheme == "https" if configured is None else bool(configured)


def start_session(request: Request, response: Response, principal: Principal) -> Session:
    """A new session for ``principal``, its cookies set on ``response``.

    The session cookie is HttpOnly and SameSite=Lax (so the first page after a single sign-on redirect
    is logged in); state-changing requests are protected by the CSRF token, which the console reads
    from the ``cloudtap_csrf`` cookie and echoes as ``X-CSRF-Token``.
    """
    access = access_of(request)
    session = access.start_session(principal)
    max_age = int(session.expires_at - access.clock())
    secure = _secure(request)
    response.set_cookie(SESSION_COOKIE, session.secret, max_age=max_age, httponly=True, secure=secure,
                        samesite="lax", path="/")  # fmt: skip
    response.set_cookie(CSRF_COOKIE, session.csrf, max_age=max_age, httponly=False, secure=secure,
                        samesite="strict", path="/")  # fmt: skip
    return session


@router.post("/login", dependencies=[Depends(require(PUBLIC))], responses=_401)
def login(body: LoginIn, request: Request, response: Response) -> dict[str, Any]:
    """Start a browser session: sets the session cookie (HttpOnly) and the CSRF cookie."""
    principal = _login(request, body.username, body.password)
    session = start_session(request, response, principal)
    audit_of(request.app).record("auth.login", principal.name, client=_client(request), via="password")
    return {"user": principal.describe(), "csrf": session.csrf, "expires_at": session.expires_at}


@router.post("/logout", dependencies=[Depends(require(PUBLIC))])
def logout(request: Request, response: Response) -> dict[str, Any]:
    """End the browser session (if any) and clear its cookies."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        access_of(request).end_session(cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return {"logged_out": True}


@router.get("/me", dependencies=[Depends(require(AUTHENTICATED))], responses=_401)
def me(principal: PrincipalDep) -> dict[str, Any]:
    """Who is calling: name, roles, bindings and where each permission holds (``*``: every project)."""
    return principal.describe()


@router.post("/token", response_model=TokenOut, dependencies=[Depends(require(PUBLIC))], responses=_401)
def token_for_password(body: PasswordTokenIn, request: Request) -> TokenOut:
    """Trade a user name and password for a new API token (``cloudtap login``)."""
    principal = _login(request, body.username, body.password)
    return _issue(request, principal, principal.name, body.name, body.days)


def _issue(request: Request, actor: Principal, user: str, name: str, days: float | None) -> TokenOut:
    try:
        issued = access_of(request).issue_token(user, name, days)
    except AuthError as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    audit_of(request.app).record("token.issue", actor.name, user=user, token_id=issued.id, name=name,
                                 expires_at=issued.expires_at)  # fmt: skip
    return TokenOut(token=issued.token, id=issued.id, name=issued.name, user=issued.user, expires_at=issued.expires_at)


@router.post("/tokens", response_model=TokenOut, dependencies=[Depends(require(AUTHENTICATED))], responses=_401)
def create_token(body: TokenIn, request: Request, principal: PrincipalDep) -> TokenOut:
    """A new API token for the caller."""
    return _issue(request, principal, principal.name, body.name, body.days)


@router.get("/tokens", dependencies=[Depends(require(AUTHENTICATED))], responses=_401)
def list_tokens(request: Request, principal: PrincipalDep, all_users: bool = False) -> list[dict[str, Any]]:
    """The caller's tokens (never their secrets); ``all_users`` for admins."""
    if all_users:
        if not principal.can(Permission.USERS_MANAGE) or principal.projects_for(Permission.USERS_MANAGE) is not None:
            raise HTTPException(403, f"{principal.name} lacks the {Permission.USERS_MANAGE.value} permission")
        return access_of(request).tokens()
    return access_of(request).tokens(principal.name)


@router.delete("/tokens/{token_id}", dependencies=[Depends(require(AUTHENTICATED))],
               responses={**_401, 403: {"model": ErrorText}, 404: {"model": ErrorText}})  # fmt: skip
def revoke_token(token_id: str, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Revoke one of the caller's tokens (admins: anyone's)."""
    access = access_of(request)
    try:
        owner = access.token_owner(token_id)
        if owner != principal.name and principal.projects_for(Permission.USERS_MANAGE) is not None:
            audit_of(request.app).record("token.revoke", principal.name, "refused", token_id=token_id)
            raise HTTPException(403, "only admins revoke other users' tokens")
        access.revoke_token(token_id)
    except AuthError as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    audit_of(request.app).record("token.revoke", principal.name, user=owner, token_id=token_id)
    return {"revoked": token_id}
