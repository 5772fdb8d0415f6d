"""Versioned schema migrations: numbered steps recorded in ``schema_version``, applied in order.

Every statement is idempotent (``IF NOT EXISTS``, truncate-then-backfill), so a migration interrupted
half way is simply run again. Run migrations with ingest stopped (the server does it at start-up):
a backfill racing live inserts could count rows twice.

After the numbered steps, :func:`migrate` adds any column the generated DDL has and the tables lack,
so a field added to ``FLOW_FIELDS`` reaches existing stores without a hand-written step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloudtap.server.store.ddl import (
    REQUESTS_SINCE,
    TABLES,
    VIEWS,
    DdlContext,
    add_columns_sql,
    backfill_sql,
    create_table_sql,
    create_view_sql,
    ident,
)


@dataclass(frozen=True)
class Migration:
    """One numbered schema step."""

    version: int
    description: str
    statements: Callable[[DdlContext], list[str]]


def _create_tables(version: int) -> Callable[[DdlContext], list[str]]:
    def statements(ctx: DdlContext) -> list[str]:
        out: list[str] = []
        for spec in TABLES.values():
            if spec.since == version:
                out += create_table_sql(spec, ctx, version)
        return out

    return statements


def _add_columns(version: int) -> Callable[[DdlContext], list[str]]:
    def statements(ctx: DdlContext) -> list[str]:
        out: list[str] = []
        for spec in TABLES.values():
            if 0 < spec.since < version:
                out += add_columns_sql(spec, [c for c in spec.columns if c.since == version], ctx)
        return out

    return statements


def _rollups(ctx: DdlContext) -> list[str]:
    """Endpoint and hourly tables, backfilled from the edges already stored, then their views."""
    out = _create_tables(3)(ctx)
    views = [v for v in VIEWS.values() if v.since == 3]
    for target in dict.fromkeys(v.target for v in views):
        out.append(f"TRUNCATE TABLE IF EXISTS {ctx.local(target)}{ctx.on_cluster}")
    out += [backfill_sql(v, ctx) for v in views]
    out += [create_view_sql(v, ctx) for v in views]
    return out


def _requests(ctx: DdlContext) -> list[str]:
    """``request_log``, its rollups and their views (nothing to backfill), and the flows' request counters."""
    out = _create_tables(REQUESTS_SINCE)(ctx) + _add_columns(REQUESTS_SINCE)(ctx)
    return out + [create_view_sql(v, ctx) for v in VIEWS.values() if v.since == REQUESTS_SINCE]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "raw tables: flow_log, edge_1s, edge_1m, ingest_log", _create_tables(1)),
    Migration(
        2, "cloud identity columns (region/project/host/vm/subnet/pod/service ids per side)", _add_columns(2)
    ),
    Migration(3, "endpoint_1s/1m/1h and edge_1h filled by materialized views (backfilled)", _rollups),
    Migration(
        REQUESTS_SINCE,
        "application requests: request_log, request_1s/1m/1h (views), request counters on flow_log",
        _requests,
    ),
)
LATEST = MIGRATIONS[-1].version


def bootstrap_sql(ctx: DdlContext) -> list[str]:
    """The database and the ``schema_version`` table."""
    return [f"CREATE DATABASE IF NOT EXISTS {ident(ctx.database)}{ctx.on_cluster}"] + create_table_sql(
        TABLES["schema_version"], ctx
    )


def migration_sql(ctx: DdlContext, current: int, target: int = LATEST) -> list[tuple[int, list[str]]]:
    """Statements of each migration after ``current`` up to ``target``, as (version, statements)."""
    return [(m.version, m.statements(ctx)) for m in MIGRATIONS if current < m.version <= target]


def current_version(client: Any, ctx: DdlContext) -> int:
    """Highest version recorded in ``schema_version`` (0 when the store is empty)."""
    exists = client.command(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'schema_version'",
        parameters={"db": ctx.database},
    )
    if not int(exists):
        return 0
    return int(client.command(f"SELECT max(version) FROM {ctx.local('schema_version')}"))


def missing_columns_sql(client: Any, ctx: DdlContext, version: int) -> list[str]:
    """``ADD COLUMN`` statements for columns of tables existing at ``version`` that the store lacks."""
    rows = client.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String}", parameters={"db": ctx.database}
    ).result_rows
    have: dict[str, set[str]] = {}
    for table, name in rows:
        have.setdefault(table, set()).add(name)
    out: list[str] = []
    for spec in TABLES.values():
        local = ctx.local_name(spec.name)
        if spec.since > version or local not in have:
            continue
        missing = [c for c in spec.columns_at(version) if c.name not in have[local]]
        out += add_columns_sql(spec, missing, ctx)
    return out


def migrate(client: Any, ctx: DdlContext, target: int = LATEST) -> int:
    """Bring the store to schema ``target`` (default: latest); returns the version now in force.

    Args:
        client: a clickhouse-connect client (chDB or HTTP).
        ctx: database, cluster and TTLs.
        target: stop at this version (used to build old stores in tests).
    """
    for sql in bootstrap_sql(ctx):
        client.command(sql)
    current = current_version(client, ctx)
    version_table = ctx.local("schema_version")
    description = {m.version: m.description for m in MIGRATIONS}
    for version, statements in migration_sql(ctx, current, target):
        for sql in statements:
            client.command(sql)
        client.command(
            f"INSERT INTO {version_table} (version, description) SELECT {{v:UInt32}}, {{d:String}}",
            parameters={"v": version, "d": description[version]},
        )
        current = version
    for sql in missing_columns_sql(client, ctx, current):
        client.command(sql)
    return current
