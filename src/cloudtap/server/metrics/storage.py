"""Storage metrics: parts, rows and bytes per table, data size against the disk budget, retention runs.

One query of ``system.parts`` per scrape, through the app's own store (embedded chDB allows one process
per data path, so nothing else may open it); the retention counters come from ``app.state.housekeeper``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric

from cloudtap.server.housekeeping import retention_policy
from cloudtap.server.metrics.base import AppCollector, counter, gauge
from cloudtap.server.store.ddl import TABLES, quote

P = "cloudtap_server_storage_"
R = "cloudtap_server_retention_"


def parts_by_table(store: Any) -> dict[str, dict[str, tuple[int, int, int]]]:
    """host -> table -> (active parts, rows, bytes on disk) of the store's tables."""
    ctx = store.ctx
    source = f"clusterAllReplicas({quote(ctx.cluster)}, system.parts)" if ctx.cluster else "system.parts"
    table = store.query_arrow(
        "SELECT hostName() AS host, table, count() AS parts, sum(rows) AS rows, sum(bytes_on_disk) AS bytes "
        f"FROM {source} WHERE database = {{db:String}} AND active GROUP BY host, table",
        parameters={"db": ctx.database},
    )
    by_local = {ctx.local_name(name): name for name in TABLES}
    found: dict[str, dict[str, tuple[int, int, int]]] = {}
    for row in table.to_pylist():
        name = by_local.get(row["table"])
        if name is not None:
            found.setdefault(row["host"], {})[name] = (int(row["parts"]), int(row["rows"]), int(row["bytes"]))
    return found


class StorageCollector(AppCollector):
    """``cloudtap_server_storage_*`` (the store now) and ``cloudtap_server_retention_*`` (housekeeping)."""

    name = "storage"

    def families(self) -> Iterator[Metric]:
        yield from self._store()
        yield from self._retention()

    def _store(self) -> Iterator[Metric]:
        store, settings = self.state("store"), self.state("settings")
        keeper = self.state("housekeeper")
        budget = getattr(keeper, "budget_bytes", None)
        if keeper is None and settings is not None:
            budget = retention_policy(settings.storage).disk_budget_bytes
        yield gauge(P + "budget_bytes", "storage.max_disk_gib in bytes (0: no budget)", budget or 0)
        try:
            hosts = parts_by_table(store) if hasattr(store, "query_arrow") and hasattr(store, "ctx") else None
        except Exception:  # the store does not answer: say so, the rest of the scrape goes on
            hosts = None
        yield gauge(P + "up", "1 when the store answered this scrape's system.parts query", 0 if hosts is None else 1)
        if hosts is None:
            return
        parts = gauge(P + "parts", "active data parts per table (all hosts)", labels=["table"])
        rows = gauge(P + "rows", "rows in active parts per table (all hosts)", labels=["table"])
        size = gauge(P + "table_bytes", "bytes on disk of active parts per table (all hosts)", labels=["table"])
        for name in sorted(TABLES):
            got = [per[name] for per in hosts.values() if name in per]
            parts.add_metric([name], sum(g[0] for g in got))
            rows.add_metric([name], sum(g[1] for g in got))
            size.add_metric([name], sum(g[2] for g in got))
        yield parts
        yield rows
        yield size
        data = max((sum(v[2] for t, v in per.items() if TABLES[t].tier != "meta") for per in hosts.values()), default=0)
        yield gauge(P + "data_bytes", "bytes on disk of the data tables on the fullest host (what the budget counts)",
                    data)  # fmt: skip

    def _retention(self) -> Iterator[Metric]:
        keeper = self.state("housekeeper")
        snap: dict[str, Any] = keeper.snapshot() if keeper is not None else {}
        yield counter(R + "runs", "disk budget passes run by the housekeeper", snap.get("runs", 0))
        yield counter(R + "errors", "disk budget passes that failed", snap.get("errors", 0))
        dropped = counter(R + "dropped_partitions", "partitions dropped to keep to the disk budget", labels=["table"])
        dropped_bytes = counter(R + "dropped_bytes", "bytes of the partitions dropped", labels=["table"])
        for table, n in sorted(snap.get("dropped_partitions_by_table", {}).items()):
            dropped.add_metric([table], n)
            dropped_bytes.add_metric([table], snap["dropped_bytes_by_table"].get(table, 0))
        yield dropped
        yield dropped_bytes
        yield gauge(R + "last_run_timestamp_seconds", "when the last pass ended (0: none yet)", snap.get("last_run") or 0)
        yield gauge(R + "last_run_seconds", "how long the last pass took", snap.get("last_duration_s") or 0)
        yield gauge(R + "period_seconds", "storage.housekeeping_s", snap.get("period_s") or 0)
