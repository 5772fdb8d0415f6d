"""/api/v1/users: local accounts and their role bindings (admins), and a user's own password."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.server.access.permissions import AUTHENTICATED, Permission
from cloudtap.server.access.principal import RoleBinding
from cloudtap.server.access.service import AuthError
from cloudtap.server.api.deps import PrincipalDep
from cloudtap.server.api.guard import require
from cloudtap.server.api.routes._errors import INVALID, ErrorText
from cloudtap.server.api.routes.auth import access_of
from cloudtap.server.audit import audit_of

router = APIRouter(prefix="/api/v1/users", tags=["users"])
_ADMIN = [Depends(require(Permission.USERS_MANAGE))]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorText, "description": "bad name, weak password or unknown role"},
    404: {"model": ErrorText, "description": "no such user"},
    409: {"model": ErrorText, "description": "the user exists"},
    **INVALID,
}


class BindingIn(BaseModel):
    """A role, on every project (``projects`` null) or only on the listed ones."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(description="viewer | operator | admin")
    projects: list[str] | None = Field(None, max_length=1000)

    def binding(self) -> RoleBinding:
        return RoleBinding.parse(self.model_dump())


class UserIn(BaseModel):
    """A new local user."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)
    bindings: list[BindingIn] = Field(default_factory=lambda: [BindingIn(role="viewer")], max_length=100)


class PasswordIn(BaseModel):
    """A new password."""

    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024)


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except AuthError as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def _bindings(items: list[BindingIn]) -> list[RoleBinding]:
    return [_call(b.binding) for b in items]


@router.get("", dependencies=_ADMIN)
def list_users(request: Request) -> list[dict[str, Any]]:
    """Every user (no secrets)."""
    return access_of(request).users()  # type: ignore[no-any-return]


@router.post("", dependencies=_ADMIN, responses=_ERRORS, status_code=201)
def add_user(body: UserIn, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Create a local user with role bindings (default: viewer everywhere)."""
    user = _call(access_of(request).add_user, body.name, body.password, _bindings(body.bindings))
    audit_of(request.app).record("user.add", principal.name, user=body.name, bindings=user["bindings"])
    return user  # type: ignore[no-any-return]


@router.get("/{name}", dependencies=_ADMIN, responses=_ERRORS)
def get_user(name: str, request: Request) -> dict[str, Any]:
    """One user."""
    return _call(access_of(request).user, name)  # type: ignore[no-any-return]


@router.put("/{name}/bindings", dependencies=_ADMIN, responses=_ERRORS)
def set_bindings(name: str, body: list[BindingIn], request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Replace a user's role bindings."""
    user = _call(access_of(request).set_bindings, name, _bindings(body))
    audit_of(request.app).record("user.bindings", principal.name, user=name, bindings=user["bindings"])
    return user  # type: ignore[no-any-return]


@router.post("/{name}/disable", dependencies=_ADMIN, responses=_ERRORS)
def disable(name: str, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Disable a user: sessions end, tokens stop working."""
    if name == principal.name:
        raise HTTPException(400, "you cannot disable yourself")
    user = _call(access_of(request).set_disabled, name, True)
    audit_of(request.app).record("user.disable", principal.name, user=name)
    return user  # type: ignore[no-any-return]


@router.post("/{name}/enable", dependencies=_ADMIN, responses=_ERRORS)
def enable(name: str, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Enable a disabled user."""
    user = _call(access_of(request).set_disabled, name, False)
    audit_of(request.app).record("user.enable", principal.name, user=name)
    return user  # type: ignore[no-any-return]


@router.put("/{name}/password", dependencies=[Depends(require(AUTHENTICATED))], responses=_ERRORS)
def set_password(name: str, body: PasswordIn, request: Request, principal: PrincipalDep) -> dict[str, Any]:
    """Change a password: your own, or anyone's as an admin. The user's sessions end."""
    if name != principal.name and principal.projects_for(Permission.USERS_MANAGE) is not None:
        audit_of(request.app).record("user.password", principal.name, "refused", user=name)
        raise HTTPException(403, "only admins change other users' passwords")
    _call(access_of(request).set_password, name, body.password)
    audit_of(request.app).record("user.password", principal.name, user=name)
    return {"changed": name}
