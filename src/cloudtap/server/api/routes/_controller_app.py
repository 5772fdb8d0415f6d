"""The app's controller: where its state lives, building it, its lifespan, and the documented refusals."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from cloudtap.inventory.model import Snapshot
from cloudtap.server.api.routes._errors import ErrorText, unprocessable_item
from cloudtap.server.controller.auth import Refusal
from cloudtap.server.controller.service import Controller
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
    ctl = Controller(cfg, path, inventory, getattr(app.state, "store", None), settings.storage.database)
    ctl.importer = importer_of(app)
    return ctl


def importer_of(app: FastAPI) -> Callable[[str | None], str | None]:
    """Who may ``POST /ingest`` without an agent credential: a user whose API token carries an ``admin``
    role on every project (``cloudtap import --server``); anyone while ``auth.enabled`` is false (development)."""

    def importer(token: str | None) -> str | None:
        settings = app.state.settings
        auth = getattr(settings, "auth", None)
        if auth is not None and not auth.enabled:
            return "anonymous"
        access = getattr(app.state, "access", None)
        from cloudtap.server.access.credentials import split_token
        from cloudtap.server.access.service import AuthError

        if not token or access is None or split_token(token) is None:
            return None  # not a user's API token: the agent credential check answers

        try:
            principal = access.verify_token(token)
        except AuthError as exc:
            raise Refusal(401, exc.reason) from exc
        if not any(b.role == "admin" and b.projects is None for b in principal.bindings):
            raise Refusal(403, f"user {principal.name!r} may not import batches: that needs the admin role on every "
                               "project (agents send their own credential)")  # fmt: skip
        return str(principal.name)

    return importer


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
    """The controller of the request's app."""
    return get_controller_app(request.app)


def invalid(where: str, field: str, message: str, allowed: list[str] | None = None) -> HTTPException:
    """A 422 in FastAPI's shape for one bad field."""
    return HTTPException(422, detail=[unprocessable_item(where, field, message, allowed)])


def refused(exc: Refusal) -> HTTPException:
    """The HTTP answer of a controller refusal (bad input: FastAPI's 422 shape, like every other route)."""
    if exc.status in (400, 422):
        return invalid("body", "registration", exc.reason)
    return HTTPException(exc.status, exc.reason)


#: documented error answers (``ErrorText``: ``{"detail": "<why>"}``)
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorText, "description": "credential missing, unknown or replaced (the agent registers again)"},
    403: {"model": ErrorText, "description": "the credential is another agent's, or the caller lacks the permission"},
}
FORBIDDEN: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorText, "description": "not authenticated"},
    403: {"model": ErrorText, "description": "the permission is missing, or the target is outside the caller's projects"},
}
UNKNOWN_AGENT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorText, "description": "unknown agent id: register first (the agent registers again)"},
}
NO_AGENT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorText, "description": "no agent with that id, name or host name"},
}
NO_COMMAND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorText, "description": "no such command"}}
NO_POLICY: dict[int | str, dict[str, Any]] = {404: {"model": ErrorText, "description": "no such policy"}}
