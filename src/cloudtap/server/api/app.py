"""create_app: the FastAPI application, built from settings and a store (no globals, no import-time state).

Every route declares its permission (``cloudtap.server.api.guard``); the access service
(``app.state.access``) knows users, tokens and sessions; the audit log is ``app.state.audit``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from cloudtap import __version__
from cloudtap.errors import CloudtapError
from cloudtap.server.access.db import AccessDB
from cloudtap.server.access.oidc import relying_party_of
from cloudtap.server.access.service import AccessService
from cloudtap.server.api.body_limit import BodyLimitMiddleware
from cloudtap.server.api.routes import analysis as analysis_routes
from cloudtap.server.api.routes import audit as audit_routes
from cloudtap.server.api.routes import auth as auth_routes
from cloudtap.server.api.routes import console as console_routes
from cloudtap.server.api.routes import controller as controller_routes
from cloudtap.server.api.routes import findings as findings_routes
from cloudtap.server.api.routes import fleet as fleet_routes
from cloudtap.server.api.routes import health, ingest, pcap, query
from cloudtap.server.api.routes import inventory as inventory_routes
from cloudtap.server.api.routes import oidc as oidc_routes
from cloudtap.server.api.routes import users as user_routes
from cloudtap.server.audit import audit_of
from cloudtap.server.housekeeping import Housekeeper
from cloudtap.server.ingest import Ingestor
from cloudtap.server.metrics import install_metrics
from cloudtap.server.pcap.fleet_targets import AppFleetTargets
from cloudtap.server.settings import ServerSettings
from cloudtap.server.store.base import FlowStore

log = logging.getLogger(__name__)


def access_db_path(settings: ServerSettings) -> Path:
    """``auth.db_path``, else ``<chDB data dir>/access.sqlite``, else ``/var/lib/cloudtap/access.sqlite``."""
    if settings.auth.db_path is not None:
        return settings.auth.db_path
    dsn = settings.storage.dsn
    if dsn.startswith("chdb://") and dsn[len("chdb://") :].startswith("/"):
        return Path(dsn[len("chdb://") :]) / "access.sqlite"
    return Path("/var/lib/cloudtap/access.sqlite")


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def build_access(settings: ServerSettings) -> AccessService:
    """The access service over its SQLite file, or PostgreSQL with ``controller.database_url`` (auth.enabled false is
    refused off loopback)."""
    auth = settings.auth
    if not auth.enabled:
        if not _loopback(settings.api.listen):
            raise CloudtapError(
                f"auth.enabled is false but the API listens on {settings.api.listen}: anyone who reaches it could "
                "read every project's flows and packets; turn auth on, or listen on 127.0.0.1 only"
            )
        log.warning("auth.enabled is false: every caller on this host is an admin (development only)")
    url = settings.controller.database_url
    if url:  # several server processes share users, tokens and sessions with their other control state
        from cloudtap.server.access.db_postgres import AccessPostgresDB

        return AccessService(AccessPostgresDB(url), auth.session_hours * 3600, auth.token_days)
    return AccessService(AccessDB(access_db_path(settings)), auth.session_hours * 3600, auth.token_days)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Housekeeping (disk budget on a schedule) for as long as the app serves."""
    keeper = Housekeeper(app.state.store, app.state.settings)
    app.state.housekeeper = keeper
    keeper.start()
    findings_loop = await asyncio.to_thread(findings_routes.start, app)  # findings.enabled: every minute
    try:
        yield
    finally:
        if findings_loop is not None:
            await asyncio.to_thread(findings_loop.stop)
        await asyncio.to_thread(keeper.stop)


def create_app(settings: ServerSettings, store: FlowStore) -> FastAPI:
    """Build the API around an open store (the caller owns the store's lifetime)."""
    app = FastAPI(
        title="cloudtap",
        version=__version__,
        summary="East-west traffic of private clouds: ingest, flows, edges, analysis.",
        docs_url=None,  # served from local files by routes.console
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, limit_bytes=settings.auth.max_json_kib << 10)  # ingest has its own
    app.state.settings = settings
    app.state.store = store
    app.state.access = build_access(settings)
    audit_of(app)
    relying_party_of(app)  # a bad auth.oidc section stops the start, not the first login
    app.state.ingestor = Ingestor(store)
    app.state.pcap_targets = AppFleetTargets(app)  # VM -> agents: inventory, flow records, controller
    install_metrics(app)  # the app's own Prometheus registry and the request-timing middleware
    # the routes agents call many times a second come first: FastAPI tries routers in this order, and
    # matching a path through every included router costs ~1 ms of the event loop per request
    app.include_router(controller_routes.router)  # agents: register, heartbeat, config, commands
    app.include_router(ingest.router)
    app.include_router(health.router)
    app.include_router(auth_routes.router)
    app.include_router(oidc_routes.router)
    app.include_router(user_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(query.router)
    app.include_router(inventory_routes.router)
    app.include_router(pcap.router)
    app.include_router(analysis_routes.router)
    app.include_router(findings_routes.router)
    app.include_router(fleet_routes.router)
    app.include_router(console_routes.router)
    return app
