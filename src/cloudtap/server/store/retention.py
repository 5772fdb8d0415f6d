"""Retention: TTL by ingest time per table, and a disk budget enforced by dropping partitions.

Rows expire by ``inserted_at`` (when they reached the store), never by flow time: a capture from 2019
imported today lives as long as today's traffic. The disk budget drops whole partitions (one day of
record time of one table): finest tier first (``flow_log``, ``request_log``, ``edge_1s``, ``endpoint_1s``,
``request_1s``, then the 1-minute tables, then the hourly rollups), and within a tier the partition whose
newest row arrived longest ago first.

``RetentionPolicy.max_days`` caps every data table's TTL (the server's ``storage.retention_days``): no
flow or metric row outlives it, whatever the per-table TTL says. Meta tables (``ingest_log``) keep
their own TTL: the exactly-once log must outlive the data it deduplicates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudtap.server.store.ddl import TABLES, DdlContext, TableSpec, quote, ttl_clause

DAY_S = 86_400
#: Default time to live (days since ingest) per table; ``None`` keeps rows forever.
DEFAULT_TTL_DAYS: dict[str, float | None] = {
    "flow_log": 7,
    "edge_1s": 2,
    "endpoint_1s": 2,
    "edge_1m": 30,
    "endpoint_1m": 30,
    "edge_1h": 400,
    "endpoint_1h": 400,
    "request_log": 7,
    "request_1s": 2,
    "request_1m": 30,
    "request_1h": 400,
    "ingest_log": 30,
}
#: Order in which tiers give up partitions to the disk budget.
TIER_ORDER = ("raw", "1m", "1h")
_TTL_SECONDS = re.compile(r"TTL .*toIntervalSecond\((\d+)\)")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long rows live (per table, days since ingest) and how much disk the store may use.

    Attributes:
        ttl_days: TTL per table (days since ingest; ``None`` keeps forever); tables not named keep
            ``DEFAULT_TTL_DAYS``.
        disk_budget_bytes: bytes the data tables may use (``None``: no budget).
        max_days: upper bound on every data table's TTL (``None``: no bound); meta tables are exempt.
    """

    ttl_days: Mapping[str, float | None] = field(default_factory=lambda: dict(DEFAULT_TTL_DAYS))
    disk_budget_bytes: int | None = None
    max_days: float | None = None

    def __post_init__(self) -> None:
        unknown = set(self.ttl_days) - {n for n, s in TABLES.items() if s.ttl_column}
        if unknown:
            raise ValueError(
                f"retention for unknown table(s) {sorted(unknown)}; known: {sorted(DEFAULT_TTL_DAYS)}"
            )
        for name, days in self.ttl_days.items():
            if days is not None and days <= 0:
                raise ValueError(f"retention of {name} must be positive days or None, got {days}")
        if self.max_days is not None and self.max_days <= 0:
            raise ValueError(f"max_days must be positive or None, got {self.max_days}")
        if self.disk_budget_bytes is not None and self.disk_budget_bytes < 0:
            raise ValueError(f"disk_budget_bytes must be >= 0 or None, got {self.disk_budget_bytes}")

    def effective_days(self) -> dict[str, float | None]:
        """TTL per table in days after defaults and the ``max_days`` cap."""
        days = {**DEFAULT_TTL_DAYS, **self.ttl_days}
        if self.max_days is not None:
            for name, d in days.items():
                if TABLES[name].tier != "meta":
                    days[name] = self.max_days if d is None else min(d, self.max_days)
        return days

    def ttl_seconds(self) -> dict[str, int | None]:
        """Time to live per table in seconds (tables not named keep the default; capped by ``max_days``)."""
        days = self.effective_days()
        return {name: None if d is None else max(1, int(round(d * DAY_S))) for name, d in days.items()}


@dataclass(frozen=True)
class DroppedPartition:
    """A partition the disk budget removed."""

    table: str
    partition_id: str
    bytes: int


def _current_ttl(engine_full: str) -> int | None:
    match = _TTL_SECONDS.search(engine_full)
    return int(match.group(1)) if match else None


def ttl_changes_sql(client: Any, ctx: DdlContext) -> list[str]:
    """``ALTER ... MODIFY/REMOVE TTL`` for tables whose TTL differs from ``ctx.ttl_seconds``."""
    rows = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
        parameters={"db": ctx.database},
    ).result_rows
    engines = dict(rows)
    out = []
    for spec in TABLES.values():
        local = ctx.local_name(spec.name)
        if spec.ttl_column is None or local not in engines:
            continue
        want = ctx.ttl_seconds.get(spec.name)
        if _current_ttl(engines[local]) == (int(want) if want else None):
            continue
        change = ttl_clause(spec, ctx).strip() if want else "TTL"
        verb = "MODIFY" if want else "REMOVE"
        out.append(f"ALTER TABLE {ctx.local(spec.name)}{ctx.on_cluster} {verb} {change}")
    return out


def apply_ttl(client: Any, ctx: DdlContext) -> list[str]:
    """Bring every table's TTL to the policy; returns the statements run."""
    statements = ttl_changes_sql(client, ctx)
    for sql in statements:
        client.command(sql)
    return statements


def _parts_source(ctx: DdlContext) -> str:
    if ctx.cluster:
        return f"clusterAllReplicas({quote(ctx.cluster)}, system.parts)"
    return "system.parts"


def partition_usage(client: Any, ctx: DdlContext) -> list[tuple[str, str, str, int]]:
    """Active bytes on disk per (host, table, partition id) of the store's data tables."""
    rows = client.query(
        f"SELECT hostName() AS host, table, partition_id, sum(bytes_on_disk) FROM {_parts_source(ctx)} "
        "WHERE database = {db:String} AND active GROUP BY host, table, partition_id",
        parameters={"db": ctx.database},
    ).result_rows
    by_local = {ctx.local_name(s.name): s.name for s in TABLES.values()}
    return [(h, by_local[t], p, int(b)) for h, t, p, b in rows if t in by_local]


def data_bytes(client: Any, ctx: DdlContext) -> int:
    """Bytes on disk of the data tables (meta tables not counted) on the fullest host."""
    per_host: dict[str, int] = {}
    for host, table, _pid, size in partition_usage(client, ctx):
        if TABLES[table].tier != "meta":
            per_host[host] = per_host.get(host, 0) + size
    return max(per_host.values(), default=0)


def _partition_ages(client: Any, ctx: DdlContext, spec: TableSpec) -> dict[str, int]:
    """Newest ``inserted_at`` (epoch seconds) per partition id of one table."""
    rows = client.query(
        f"SELECT toString({spec.partition_by}) AS p, toUInt32(max(inserted_at)) FROM {ctx.table(spec.name)} GROUP BY p"
    ).result_rows
    return {p: int(t) for p, t in rows}


def drop_partition_sql(ctx: DdlContext, table: str, partition_id: str) -> str:
    """``ALTER TABLE ... DROP PARTITION ID``."""
    return f"ALTER TABLE {ctx.local(table)}{ctx.on_cluster} DROP PARTITION ID {quote(partition_id)}"


def enforce_disk_budget(client: Any, ctx: DdlContext, budget_bytes: int) -> list[DroppedPartition]:
    """Drop partitions until the data tables use at most ``budget_bytes`` (on the fullest host).

    Call it periodically (e.g. every few minutes). Meta tables (``ingest_log``, ``schema_version``)
    are never dropped and not counted.

    Returns:
        the partitions dropped, in order.
    """
    usage = partition_usage(client, ctx)
    host_total: dict[str, int] = {}
    per_partition: dict[tuple[str, str], dict[str, int]] = {}
    for host, table, pid, size in usage:
        if TABLES[table].tier == "meta":
            continue
        host_total[host] = host_total.get(host, 0) + size
        per_partition.setdefault((table, pid), {})[host] = size
    if not host_total or max(host_total.values()) <= budget_bytes:
        return []
    ages: dict[str, dict[str, int]] = {}
    for table in {t for t, _ in per_partition}:
        ages[table] = _partition_ages(client, ctx, TABLES[table])

    def order(key: tuple[str, str]) -> tuple[int, int, str, str]:
        table, pid = key
        return TIER_ORDER.index(TABLES[table].tier), ages[table].get(pid, 0), pid, table

    dropped: list[DroppedPartition] = []
    for table, pid in sorted(per_partition, key=order):
        if max(host_total.values()) <= budget_bytes:
            break
        client.command(drop_partition_sql(ctx, table, pid))
        sizes = per_partition[(table, pid)]
        for host, size in sizes.items():
            host_total[host] -= size
        dropped.append(DroppedPartition(table, pid, max(sizes.values())))
    return dropped
