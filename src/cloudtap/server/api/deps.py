"""FastAPI dependencies as ``Annotated`` aliases, so route signatures read plainly."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from cloudtap.server.access.principal import Principal
from cloudtap.server.access.scope import Scope, scoped
from cloudtap.server.access.scoped_names import ScopedNames
from cloudtap.server.api.guard import principal_of, scope_of
from cloudtap.server.settings import ServerSettings
from cloudtap.server.store.base import FlowStore


def get_store(request: Request) -> FlowStore:
    """The app's flow store, limited to the caller's project scope (inside every query it runs).

    Fails closed (500) on a route that declared no permission: there is no scope to apply.
    """
    return scoped(request.app.state.store, scope_of(request))  # type: ignore[no-any-return]


def get_settings(request: Request) -> ServerSettings:
    """The app's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


def get_scope(request: Request) -> Scope:
    """The caller's project scope for the route's permission."""
    return scope_of(request)


def get_principal(request: Request) -> Principal:
    """Who is calling (recorded by the route's guard)."""
    return principal_of(request)


def get_names(request: Request) -> Any:
    """The inventory's name resolver for this caller (``None`` when the inventory is disabled): a
    project-bound caller's filters resolve only names of entities it may see."""
    from cloudtap.server.api.routes.inventory import install

    state = request.app.state
    if getattr(state, "names", None) is None:
        install(request.app)
    names = getattr(state, "names", None)
    projects = scope_of(request).projects
    if names is None or projects is None:
        return names
    return ScopedNames(names, state.inventory, projects)


StoreDep = Annotated[FlowStore, Depends(get_store)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
ScopeDep = Annotated[Scope, Depends(get_scope)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
