"""InventoryService: the inventory pieces a server runs, built from its settings and store."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cloudtap.inventory.connectors.agents import AgentsConnector
from cloudtap.inventory.connectors.base import PLATFORM_CONNECTORS, Syncer, build_connectors
from cloudtap.inventory.names_store import InventoryNames
from cloudtap.inventory.store import InventoryStore
from cloudtap.inventory.tagging import Tagger

log = logging.getLogger(__name__)


@dataclass
class InventoryService:
    """The inventory history, its name resolver, the ingest tagger and the connectors' syncer."""

    inventory: InventoryStore
    names: InventoryNames
    tagger: Tagger
    syncer: Syncer
    agents: AgentsConnector | None = None  #: fed with agent reports when no cloud API is configured

    def start(self) -> None:
        """Sync the local connectors now (static file: cheap), then run every connector periodically."""
        for connector in self.syncer.connectors:
            if connector.name == "static":
                self.syncer.sync("static")
        self.syncer.start()

    def stop(self) -> None:
        """Stop the periodic syncs."""
        self.syncer.stop()


def build_service(section: Any, store: Any | None, static_fallback: Any | None = None) -> InventoryService:
    """Build the service from the server's ``inventory`` settings section.

    Args:
        section: ``ServerSettings.inventory``.
        store: the server's ClickHouseStore (``None`` or a store without ``command``: memory only).
        static_fallback: static file to use when ``section.static_file`` is unset.

    Raises:
        ConnectorError: a configured connector cannot be built.
    """
    persistent = store if store is not None and hasattr(store, "command") and hasattr(store, "database") else None
    inventory = InventoryStore(persistent, backdate_first_sync=section.backdate_first_sync)
    connectors = build_connectors(section)
    if not section.static_file and static_fallback is not None:
        from cloudtap.inventory.connectors.static import StaticConnector

        connectors.append(StaticConnector(static_fallback))
    agents = None
    platforms = any(getattr(section, name, None) for name in PLATFORM_CONNECTORS)
    if section.learn_from_agents and not platforms:
        agents = AgentsConnector()
        connectors.append(agents)
    syncer = Syncer(inventory, connectors, period_s=section.sync_period_s)
    return InventoryService(inventory, InventoryNames(inventory), Tagger(inventory), syncer, agents)


def store_tagger(store: Any) -> Tagger | None:
    """A tagger over the inventory kept in ``store`` (``cloudtap import --data``); ``None`` when it holds none."""
    inventory = InventoryStore(store)
    return Tagger(inventory) if inventory.records() else None
