"""Tables and views as data (columns, engine, keys) and the DDL statements generated from them.

With a ``cluster``, every data table is a ``ReplicatedMergeTree`` family ``<name>_local`` created
``ON CLUSTER`` plus a ``Distributed`` table ``<name>`` over it; the views read and write the local
tables on each shard. The meta tables are replicated to every host (no shard in their path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cloudtap.clickhouse_sql import ident, quote

#: Insert deduplication window, in blocks per table (each batch adds one block per partition).
DEDUP_WINDOW = 10_000
#: Replicated tables also forget tokens older than this.
DEDUP_WINDOW_SECONDS = 7 * 86_400

REQUIRED = "required"  #: agents must send it
OPTIONAL = "optional"  #: has a DEFAULT; may be sent
DERIVED = "derived"  #: MATERIALIZED or set by the store; never sent


@dataclass(frozen=True)
class Column:
    """One column of a table."""

    name: str
    type: str
    role: str = REQUIRED
    expr: str = ""  #: ``DEFAULT ...`` / ``MATERIALIZED ...`` clause
    comment: str = ""
    since: int = 1  #: schema version that added it
    source: str = ""  #: name of the Arrow column it is filled from, when not ``name``
    convert: str = ""  #: ``ns``: the source holds Int64 ns since the epoch, stored as a time type
    codec: str = ""  #: compression codec; default LZ4

    @property
    def input_name(self) -> str:
        """Name of the Arrow column that fills it."""
        return self.source or self.name

    def sql(self) -> str:
        """The column definition as in ``CREATE TABLE``."""
        parts = [f"`{self.name}`", self.type]
        if self.expr:
            parts.append(self.expr)
        if self.codec:
            parts.append(f"CODEC({self.codec})")
        if self.comment:
            parts.append("COMMENT " + quote(self.comment))
        return " ".join(parts)


@dataclass(frozen=True)
class TableSpec:
    """One table: columns, engine and keys."""

    name: str
    columns: tuple[Column, ...]
    engine: str  #: MergeTree family name without the Replicated prefix
    order_by: tuple[str, ...]
    partition_by: str | None = None
    primary_key: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()
    shard_key: str = "rand()"
    tier: str = "raw"  #: raw (1 s / flows), 1m, 1h, or meta (never dropped for disk budget)
    ttl_column: str | None = "inserted_at"
    since: int = 1

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def columns_at(self, version: int) -> tuple[Column, ...]:
        """Columns that exist at schema ``version``."""
        return tuple(c for c in self.columns if c.since <= version)


@dataclass(frozen=True)
class ViewSpec:
    """A materialized view feeding ``target`` from every block inserted into ``source``."""

    name: str
    source: str
    target: str
    select: str  #: SELECT text with ``{source}`` where the source table goes
    since: int = 1


@dataclass(frozen=True)
class DdlContext:
    """Where and how to create the tables."""

    database: str = "cloudtap"
    cluster: str | None = None
    ttl_seconds: Mapping[str, int | None] = field(default_factory=dict)

    def local_name(self, table: str) -> str:
        """Bare name of the table (or view) that holds the data on each host."""
        from cloudtap.server.store.ddl import TABLES  # the catalog is built from these specs

        spec = TABLES.get(table)
        if self.cluster and (spec is None or spec.tier != "meta"):
            return table + "_local"
        return table

    def local(self, table: str) -> str:
        """Qualified name of the table (or view) that holds the data on each host."""
        return f"{ident(self.database)}.{ident(self.local_name(table))}"

    def table(self, table: str) -> str:
        """Qualified name to insert into and query (the Distributed table in cluster mode)."""
        return f"{ident(self.database)}.{ident(table)}"

    @property
    def on_cluster(self) -> str:
        """`` ON CLUSTER <name>`` or nothing."""
        return f" ON CLUSTER {ident(self.cluster)}" if self.cluster else ""


def _settings(spec: TableSpec, ctx: DdlContext) -> str:
    if spec.tier == "meta" and spec.name == "schema_version":
        return ""
    if ctx.cluster:
        return f" SETTINGS replicated_deduplication_window = {DEDUP_WINDOW}, " \
               f"replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECONDS}"  # fmt: skip
    return f" SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"


def _engine(spec: TableSpec, ctx: DdlContext) -> str:
    if not ctx.cluster:
        return spec.engine
    shard = "" if spec.tier == "meta" else "{shard}/"
    path = quote(f"/clickhouse/tables/{shard}{ctx.database}/{spec.name}")
    return f"Replicated{spec.engine}({path}, '{{replica}}')"


def ttl_clause(spec: TableSpec, ctx: DdlContext) -> str:
    """`` TTL inserted_at + INTERVAL n SECOND`` for the table, or nothing."""
    seconds = ctx.ttl_seconds.get(spec.name)
    if spec.ttl_column is None or not seconds:
        return ""
    return f" TTL {ident(spec.ttl_column)} + INTERVAL {int(seconds)} SECOND"


def create_table_sql(spec: TableSpec, ctx: DdlContext, version: int | None = None) -> list[str]:
    """``CREATE TABLE`` statement(s) for ``spec`` with the columns of ``version`` (default: all)."""
    columns = spec.columns if version is None else spec.columns_at(version)
    body = ",\n  ".join([c.sql() for c in columns] + [f"INDEX {i}" for i in spec.indexes])
    sql = f"CREATE TABLE IF NOT EXISTS {ctx.local(spec.name)}{ctx.on_cluster}\n(\n  {body}\n)\n"
    sql += f"ENGINE = {_engine(spec, ctx)}"
    if spec.partition_by:
        sql += f"\nPARTITION BY {spec.partition_by}"
    if spec.primary_key:
        sql += f"\nPRIMARY KEY ({', '.join(spec.primary_key)})"
    sql += f"\nORDER BY ({', '.join(spec.order_by)})"
    sql += ttl_clause(spec, ctx) + _settings(spec, ctx)
    statements = [sql]
    if ctx.cluster and spec.tier != "meta":
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {ctx.table(spec.name)}{ctx.on_cluster} AS {ctx.local(spec.name)}\n"
            f"ENGINE = Distributed({ident(ctx.cluster)}, {ident(ctx.database)}, "
            f"{ident(spec.name + '_local')}, {spec.shard_key})"
        )
    return statements


def add_columns_sql(spec: TableSpec, columns: list[Column], ctx: DdlContext) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` for ``columns`` (local and Distributed tables)."""
    if not columns:
        return []
    targets = [ctx.local(spec.name)]
    if ctx.cluster and spec.tier != "meta":
        targets.append(ctx.table(spec.name))
    adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {c.sql()}" for c in columns)
    return [f"ALTER TABLE {target}{ctx.on_cluster} {adds}" for target in targets]


def create_view_sql(view: ViewSpec, ctx: DdlContext) -> str:
    """``CREATE MATERIALIZED VIEW ... TO`` reading the source's local table."""
    select = view.select.format(source=ctx.local(view.source))
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ctx.local(view.name)}{ctx.on_cluster} "
        f"TO {ctx.local(view.target)}\nAS {select}"
    )


def backfill_sql(view: ViewSpec, ctx: DdlContext) -> str:
    """``INSERT ... SELECT`` filling ``view.target`` from the rows already in ``view.source``."""
    return f"INSERT INTO {ctx.table(view.target)}\n{view.select.format(source=ctx.table(view.source))}"
