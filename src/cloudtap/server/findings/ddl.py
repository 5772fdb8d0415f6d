"""The findings tables, in the flow store's database (created by :func:`ensure_schema`, idempotent).

* ``finding``: one row per version of a finding, ``ReplacingMergeTree(version)`` keyed by id: extending
  a finding writes it again with a higher version; reads take the newest (``FINAL``). Both ends'
  project ids are columns, so a project-bound caller's row filter applies (``scope_filters``).
* ``finding_action``: acknowledgements and mutes (who, why, when, until), append-only.
* ``finding_seen_edge``: the learned baseline of ``new_edge``/``new_port``: one row per edge key with
  its first and last minute seen (``AggregatingMergeTree`` min/max), updated by one ``INSERT ... SELECT``
  per cycle; its size follows the distinct edges, not the stored history.
* ``finding_rule``: isolation rules, every save a new version (``MergeTree``; reads take the newest).
* ``finding_cursor``: the last minute the engine processed and when its baseline started.

``finding``/``finding_action`` expire ``findings.retention_days`` after their last update, the seen
edges ``findings.baseline_days`` after they were last refreshed (wall clock: an imported old capture
is not wiped on arrival). With a cluster the tables are replicated ``ON CLUSTER`` (not sharded: small).
"""

from __future__ import annotations

from typing import Any

from cloudtap.server.store.ddl import ident

TABLES = ("finding", "finding_action", "finding_seen_edge", "finding_rule", "finding_cursor")
_IDS = "client_project_id UInt32, server_project_id UInt32"


def _columns(retention_s: int, baseline_s: int) -> dict[str, tuple[str, str, str, str]]:
    """table -> (columns, engine, order by, ttl)."""
    return {
        "finding": (
            "id String, kind LowCardinality(String), severity LowCardinality(String), subject_key String, "
            "subject String, summary String, time_from DateTime('UTC'), time_to DateTime('UTC'), "
            "first_detected DateTime64(3, 'UTC'), updated DateTime64(3, 'UTC'), detections UInt32, "
            f"figures String, baseline String, reproduce String, {_IDS}, version UInt64",
            "ReplacingMergeTree(version)",
            "id",
            f"toDateTime(updated) + INTERVAL {retention_s} SECOND",
        ),
        "finding_action": (
            "finding_id String, kind LowCardinality(String), subject_key String, action LowCardinality(String), "
            "user String, reason String, "
            f"at DateTime64(3, 'UTC'), until Nullable(DateTime64(3, 'UTC')), {_IDS}",
            "MergeTree",
            "finding_id, at",
            f"toDateTime(at) + INTERVAL {retention_s} SECOND",
        ),
        "finding_seen_edge": (
            "client_ip IPv6, server_ip IPv6, server_port UInt16, proto UInt8, "
            "first_seen SimpleAggregateFunction(min, DateTime('UTC')), "
            "last_seen SimpleAggregateFunction(max, DateTime('UTC')), "
            "client_project_id SimpleAggregateFunction(max, UInt32), "
            "server_project_id SimpleAggregateFunction(max, UInt32), "
            "refreshed SimpleAggregateFunction(max, DateTime('UTC'))",
            "AggregatingMergeTree",
            "client_ip, server_ip, server_port, proto",
            f"refreshed + INTERVAL {baseline_s} SECOND",
        ),
        "finding_rule": (
            "name String, version UInt32, body String, deleted UInt8, user String, "
            "updated_at DateTime64(3, 'UTC')",
            "MergeTree",
            "name, version",
            "",
        ),
        "finding_cursor": (
            "name String, minute DateTime('UTC'), baseline_start DateTime('UTC'), updated DateTime64(3, 'UTC')",
            "ReplacingMergeTree(updated)",
            "name",
            "",
        ),
    }


def create_sql(database: str, cluster: str | None, retention_days: float, baseline_days: float) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` for every findings table (replicated ``ON CLUSTER`` with a cluster)."""
    out = []
    tables = _columns(int(retention_days * 86400), int(baseline_days * 86400))
    for name, (columns, engine, order, ttl) in tables.items():
        on_cluster = f" ON CLUSTER {ident(cluster)}" if cluster else ""
        if cluster:
            family, _, args = engine.partition("(")
            path = f"'/clickhouse/tables/{database}/{name}', '{{replica}}'"
            engine = f"Replicated{family}({path}{', ' + args.rstrip(')') if args else ''})"
        sql = (
            f"CREATE TABLE IF NOT EXISTS {ident(database)}.{ident(name)}{on_cluster} ({columns}) "
            f"ENGINE = {engine} ORDER BY ({order})"
        )
        if ttl:
            sql += f" TTL {ttl}"
        out.append(sql)
    return out


def ensure_schema(store: Any, retention_days: float = 30.0, baseline_days: float = 28.0) -> None:
    """Create the findings tables in ``store``'s database (no-op when they exist)."""
    database = getattr(store, "database", "cloudtap")
    cluster = getattr(getattr(store, "ctx", None), "cluster", None)
    for sql in create_sql(database, cluster, retention_days, baseline_days):
        store.command(sql)


def table(store: Any, name: str) -> str:
    """Quoted ``db.name`` of a findings table."""
    return f"{ident(getattr(store, 'database', 'cloudtap'))}.{ident(name)}"


def scope_filters(store: Any, project_ids: frozenset[int] | None) -> dict[str, str]:
    """``additional_table_filters`` limiting ``finding`` / ``finding_action`` reads to rows with an end in
    ``project_ids`` (the same rule as the flow tables, see ``server/access/scope.py``); ``{}`` = all."""
    if project_ids is None:
        return {}
    ids = ", ".join(str(int(i)) for i in sorted(project_ids))
    cond = f"client_project_id IN ({ids}) OR server_project_id IN ({ids})" if ids else "0"
    database = getattr(store, "database", "cloudtap")
    return {f"{database}.{name}": cond for name in ("finding", "finding_action")}
