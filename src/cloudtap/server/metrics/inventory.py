"""Inventory metrics: each connector's syncs, failures and last success; entities by kind; tagging.

Read from ``app.state.inventory_service`` (built by the inventory router's lifespan or first use; never
here). ``source`` is a configured connector's name: as few values as connectors.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from cloudtap.inventory.entities import KIND_SPECS
from cloudtap.server.metrics.base import AppCollector, counter, gauge

P = "cloudtap_server_inventory_"


class InventoryCollector(AppCollector):
    """``cloudtap_server_inventory_*``."""

    name = "inventory"

    def families(self) -> Iterator[Metric]:
        service = self.state("inventory_service")
        statuses = service.syncer.status() if service is not None else []
        syncs = counter(P + "syncs", "connector syncs attempted", labels=["source"])
        failures = counter(P + "sync_failures", "connector syncs that failed", labels=["source"])
        success = gauge(P + "last_success_timestamp_seconds", "when the connector last synced (0: never)",
                        labels=["source"])  # fmt: skip
        duration = gauge(P + "last_sync_seconds", "how long the connector's last sync took", labels=["source"])
        failing = gauge(P + "consecutive_failures", "failed syncs since the last success", labels=["source"])
        for s in statuses:
            syncs.add_metric([s.name], s.syncs)
            failures.add_metric([s.name], s.failures)
            success.add_metric([s.name], (s.last_success_ns or 0) / 1e9)
            duration.add_metric([s.name], s.last_duration_s or 0.0)
            failing.add_metric([s.name], s.consecutive_failures)
        yield from (syncs, failures, success, duration, failing)
        entities = gauge(P + "entities", "entities known now (all sources merged), by kind", labels=["kind"])
        snapshot = service.inventory.current() if service is not None else None
        for kind, (attribute, _) in KIND_SPECS.items():
            entities.add_metric([kind], len(getattr(snapshot, attribute)) if snapshot is not None else 0)
        yield entities
        tagging = service.tagger.stats if service is not None else None
        yield counter(P + "tagged_rows", "rows the ingest tagger looked up", getattr(tagging, "rows", 0))
        yield counter(P + "tagged_sides", "row sides the tagger matched to an entity", getattr(tagging, "sides_matched", 0))
