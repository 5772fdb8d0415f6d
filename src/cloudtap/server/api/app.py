"""create_app: the FastAPI application, built from settings and a store (no globals, no import-time state)."""

from __future__ import annotations

from fastapi import FastAPI

from cloudtap import __version__
from cloudtap.server.api.routes import analysis as analysis_routes
from cloudtap.server.api.routes import controller as controller_routes
from cloudtap.server.api.routes import fleet as fleet_routes
from cloudtap.server.api.routes import health, ingest, pcap, query
from cloudtap.server.api.routes import inventory as inventory_routes
from cloudtap.server.ingest import Ingestor
from cloudtap.server.pcap.fleet_targets import AppFleetTargets
from cloudtap.server.settings import ServerSettings
from cloudtap.server.store.base import FlowStore


def create_app(settings: ServerSettings, store: FlowStore) -> FastAPI:
    """Build the API around an open store (the caller owns the store's lifetime)."""
    app = FastAPI(
        title="cloudtap",
        version=__version__,
        summary="East-west traffic of private clouds: ingest, flows, edges, analysis.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.ingestor = Ingestor(store)
    app.state.pcap_targets = AppFleetTargets(app)  # VM -> agents: inventory, flow records, controller
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(query.router)
    app.include_router(inventory_routes.router)
    app.include_router(pcap.router)
    app.include_router(analysis_routes.router)
    app.include_router(controller_routes.router)
    app.include_router(fleet_routes.router)
    return app
