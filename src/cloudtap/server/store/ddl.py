"""ClickHouse DDL of the flow store, generated from the schema field tables (one source of truth).

The columns agents send are derived from the Arrow schemas the agent itself produces
(:func:`cloudtap.meter.records.empty_table`, :func:`cloudtap.meter.edges.aggregate_edges` +
:func:`~cloudtap.meter.edges.edges_with_text`), with comments from ``FLOW_FIELDS``. Addresses become
``IPv6`` (IPv4 as ``::ffff:a.b.c.d``), enum names ``LowCardinality(String)``, integers keep their width.

Tables (see docs/storage.md for the choice of keys):

* ``flow_log`` <- kind ``flows``; ``edge_1s`` <- ``edges_1s``; ``edge_1m`` <- ``edges_60s`` (MergeTree).
* ``endpoint_1s`` / ``endpoint_1m`` <- materialized views over ``edge_1s`` / ``edge_1m`` (each edge feeds
  its client endpoint and its server endpoint); ``edge_1h`` / ``endpoint_1h`` <- views over ``edge_1m``.
  Rollups are ``AggregatingMergeTree`` with ``SimpleAggregateFunction(sum, ...)`` metrics.
* ``ingest_log`` (batches stored, for exactly-once) and ``schema_version`` (migrations applied).

With a ``cluster``, every data table is a ``ReplicatedMergeTree`` family ``<name>_local`` created
``ON CLUSTER`` plus a ``Distributed`` table ``<name>`` over it; the views read and write the local
tables on each shard. The meta tables are replicated to every host (no shard in their path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import EDGE_SUMS, aggregate_edges, edges_with_text
from cloudtap.meter.records import ADDRESS_COLUMNS, empty_table
from cloudtap.schema.flow import FLOW_COUNTERS, FLOW_FIELDS

#: Stream kind (what agents ship) -> table it is stored in.
KIND_TABLES: dict[str, str] = {"flows": "flow_log", "edges_1s": "edge_1s", "edges_60s": "edge_1m"}
#: Cloud identity fields, one ``<side>_<field>_id`` UInt32 column per side (0 = not known yet).
IDENTITY_FIELDS = ("region", "project", "host", "vm", "subnet", "pod", "service")
#: Agent annotations added to every stream (see ``cloudtap.agent.output``).
ANNOTATIONS = ("agent_id", "interface_name", "vm_domain", "vm_mac")
#: Insert deduplication window, in blocks per table (each batch adds one block per partition).
DEDUP_WINDOW = 10_000
#: Replicated tables also forget tokens older than this.
DEDUP_WINDOW_SECONDS = 7 * 86_400

REQUIRED = "required"  #: agents must send it
OPTIONAL = "optional"  #: has a DEFAULT; may be sent
DERIVED = "derived"  #: MATERIALIZED or set by the store; never sent

_ARROW_TO_CH = {
    pa.uint8(): "UInt8",
    pa.uint16(): "UInt16",
    pa.uint32(): "UInt32",
    pa.uint64(): "UInt64",
    pa.int8(): "Int8",
    pa.int16(): "Int16",
    pa.int32(): "Int32",
    pa.int64(): "Int64",
    pa.float32(): "Float32",
    pa.float64(): "Float64",
}
_ADDRESSES = {name for name, _, _ in ADDRESS_COLUMNS}
_FLOW_DOC = {name: doc for name, _, doc in FLOW_FIELDS}
_FLOW_DOC.update({name: f"{name.replace('_', ' ')} (text address in the output)" for name in _ADDRESSES})
_EDGE_DOC = {
    "time_ns": "start of the edge interval, ns since the Unix epoch",
    "client_ip": "client IP",
    "server_ip": "server IP",
    "server_port": "server port",
    "proto": "IP protocol number",
    "vlan": "VLAN id",
    "tunnel_id": "VNI / GRE key / ERSPAN session id",
    "interface": "observation point id on the agent",
    "retrans": "TCP retransmitted segments, both directions",
    "flows_opened": "flows that started in the interval",
    "flows_closed": "flows that ended in the interval",
    "flows_failed": "flows that ended without a completed handshake (refused, unanswered, reset)",
    "rtt_sum_us": "sum of handshake RTTs (us) of flows whose handshake completed in the interval",
    "rtt_count": "number of RTTs in rtt_sum_us",
}
UTC_SECOND = "DateTime('UTC')"
#: Flow record times sent as Int64 ns and stored as DateTime64(9) (named without ``_ns``).
NS_TIMES = ("start_ns", "first_ns", "last_ns")
#: Counters are small numbers in wide integers: T64 drops the unused high bits before LZ4
#: (measured: flow_log 97 -> 83 bytes/row on synthetic data, no extra CPU).
COUNTER_CODEC = "T64, LZ4"
_FLOW_COUNTER_SET = set(FLOW_COUNTERS)
UTC_NANO = "DateTime64(9, 'UTC')"


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


def ident(name: str) -> str:
    """Quote an identifier."""
    return "`" + name.replace("`", "``") + "`"


def quote(text: str) -> str:
    """Quote a string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ip_text_sql(expr: str) -> str:
    """SQL rendering an IPv6 column as the agent's text (dotted quad for IPv4-mapped addresses)."""
    return f"replaceRegexpOne(IPv6NumToString({expr}), '^::ffff:([0-9]+\\\\.[0-9]+\\\\.[0-9]+\\\\.[0-9]+)$', '\\\\1')"


def _ch_type(name: str, typ: pa.DataType) -> str:
    if name in _ADDRESSES or name in ("client_ip", "server_ip"):
        return "IPv6"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "LowCardinality(String)"
    return _ARROW_TO_CH[typ]


def _annotation_columns() -> tuple[Column, ...]:
    docs = {
        "agent_id": "agent that observed the traffic",
        "interface_name": "capture interface name on the agent",
        "vm_domain": "libvirt domain of the VM behind the interface, '' when not a VM tap",
        "vm_mac": "MAC of the VM behind the interface",
    }
    return tuple(Column(n, "LowCardinality(String)", OPTIONAL, "DEFAULT ''", docs[n]) for n in ANNOTATIONS)


def identity_columns(side: str, since: int = 2) -> tuple[Column, ...]:
    """Cloud identity ids of one side (``client``/``server``, or ``""`` for an endpoint)."""
    prefix = f"{side}_" if side else ""
    return tuple(
        Column(
            f"{prefix}{f}_id", "UInt32", OPTIONAL, "DEFAULT 0", f"{f} id from the inventory, 0 unknown", since
        )
        for f in IDENTITY_FIELDS
    )


def _inserted_at() -> Column:
    return Column(
        "inserted_at", UTC_SECOND, DERIVED, "DEFAULT now()", "when the row reached the store (retention)"
    )


def _flow_columns() -> tuple[Column, ...]:
    cols: list[Column] = []
    for f in empty_table().schema:
        doc = _FLOW_DOC.get(f.name, "")
        if f.name in NS_TIMES:  # stored once, as time; the ns name stays queryable
            name = f.name.removesuffix("_ns")
            cols.append(Column(name, UTC_NANO, REQUIRED, "", doc, source=f.name, convert="ns"))
            cols.append(Column(f.name, "Int64", DERIVED, f"ALIAS toUnixTimestamp64Nano({name})", doc))
        else:
            codec = COUNTER_CODEC if f.name in _FLOW_COUNTER_SET else ""
            cols.append(Column(f.name, _ch_type(f.name, f.type), comment=doc, codec=codec))
    cols += _annotation_columns()
    cols.append(_inserted_at())
    return tuple(cols) + identity_columns("client") + identity_columns("server")


def edge_arrow_schema() -> pa.Schema:
    """Arrow schema of an edge stream as the agent writes it (before annotations)."""
    return edges_with_text(aggregate_edges(np.zeros(0, EDGE_DELTA_DTYPE), 1.0)).schema


def _edge_columns() -> tuple[Column, ...]:
    cols: list[Column] = []
    for f in edge_arrow_schema():
        doc = _EDGE_DOC.get(f.name, "")
        if f.name == "time_ns":  # edges are at whole seconds or coarser
            cols.append(Column("time", UTC_SECOND, REQUIRED, "", doc, source="time_ns", convert="ns"))
            cols.append(
                Column("time_ns", "Int64", DERIVED, "ALIAS toInt64(toUnixTimestamp(time)) * 1000000000", doc)
            )
        else:
            typ = _ch_type(f.name, f.type)
            codec = COUNTER_CODEC if f.name in EDGE_SUMS and typ.startswith("UInt") else ""
            cols.append(Column(f.name, typ, comment=doc, codec=codec))
    cols += _annotation_columns()
    cols.append(_inserted_at())
    return tuple(cols) + identity_columns("client") + identity_columns("server")


def _sum(col: Column) -> Column:
    return Column(col.name, f"SimpleAggregateFunction(sum, {col.type})", DERIVED, "", col.comment, col.since)


_MAX_INSERTED = Column(
    "inserted_at", f"SimpleAggregateFunction(max, {UTC_SECOND})", DERIVED, "", "last insert"
)
_EDGE_DIMS = ("client_ip", "server_ip", "server_port", "proto", "vlan", "tunnel_id") + ANNOTATIONS
ENDPOINT_SUMS = (
    ("packets_out", "packets sent by the IP"),
    ("packets_in", "packets received by the IP"),
    ("bytes_out", "IP bytes sent by the IP"),
    ("bytes_in", "IP bytes received by the IP"),
    ("flows_as_client", "flows the IP opened"),
    ("flows_as_server", "flows opened to the IP"),
    ("failed_as_client", "failed flows the IP opened"),
    ("failed_as_server", "failed flows opened to the IP"),
    ("retrans", "TCP retransmissions on the IP's edges, both directions"),
    ("rtt_count", "handshake RTTs in rtt_sum_us"),
)
_ENDPOINT_DIMS = ("ip", "vlan", "tunnel_id", "agent_id")


def _edge_rollup_columns() -> tuple[Column, ...]:
    edge = {c.name: c for c in _edge_columns()}
    cols = [Column("time", UTC_SECOND, DERIVED, comment="start of the hour")]
    cols += [Column(n, edge[n].type, DERIVED, "", edge[n].comment) for n in _EDGE_DIMS]
    cols += [Column(c.name, c.type, DERIVED, "", c.comment) for c in identity_columns("client")]
    cols += [Column(c.name, c.type, DERIVED, "", c.comment) for c in identity_columns("server")]
    cols += [_sum(edge[n]) for n in EDGE_SUMS]
    return tuple(cols) + (_MAX_INSERTED,)


def _endpoint_columns() -> tuple[Column, ...]:
    cols = [
        Column("time", UTC_SECOND, DERIVED, comment="start of the interval"),
        Column("ip", "IPv6", DERIVED, comment="the endpoint"),
        Column("vlan", "UInt16", DERIVED),
        Column("tunnel_id", "UInt32", DERIVED, comment="tenant network (VNI...), separates overlapping IPs"),
        Column("agent_id", "LowCardinality(String)", DERIVED, comment="agent that observed the traffic"),
    ]
    cols += [Column(c.name, c.type, DERIVED, "", c.comment) for c in identity_columns("")]
    cols += [_sum(Column(n, "UInt64", comment=doc)) for n, doc in ENDPOINT_SUMS]
    cols.insert(len(cols) - 1, _sum(Column("rtt_sum_us", "Float64", comment="sum of handshake RTTs, us")))
    return tuple(cols) + (_MAX_INSERTED,)


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


def _endpoint_select(time_expr: str) -> str:
    ids = ",\n  ".join(f"if(side = 0, client_{f}_id, server_{f}_id) AS {f}_id" for f in IDENTITY_FIELDS)
    sums = {
        "packets_out": "if(side = 0, packets_c2s, packets_s2c)",
        "packets_in": "if(side = 0, packets_s2c, packets_c2s)",
        "bytes_out": "if(side = 0, bytes_c2s, bytes_s2c)",
        "bytes_in": "if(side = 0, bytes_s2c, bytes_c2s)",
        "flows_as_client": "if(side = 0, flows_opened, 0)",
        "flows_as_server": "if(side = 1, flows_opened, 0)",
        "failed_as_client": "if(side = 0, flows_failed, 0)",
        "failed_as_server": "if(side = 1, flows_failed, 0)",
        "retrans": "retrans",
        "rtt_sum_us": "rtt_sum_us",
        "rtt_count": "rtt_count",
    }
    agg = ",\n  ".join(f"sum({expr}) AS {name}" for name, expr in sums.items())
    groups = ", ".join(["time", *_ENDPOINT_DIMS] + [f"{f}_id" for f in IDENTITY_FIELDS])
    return (
        f"SELECT {time_expr} AS time,\n  if(side = 0, client_ip, server_ip) AS ip,\n  vlan, tunnel_id, agent_id,\n  "
        f"{ids},\n  {agg},\n  max(inserted_at) AS inserted_at\n"
        f"FROM {{source}} ARRAY JOIN [0, 1] AS side\nGROUP BY {groups}"
    )


def _edge_hour_select() -> str:
    ids = [f"{side}_{f}_id" for side in ("client", "server") for f in IDENTITY_FIELDS]
    dims = ", ".join(list(_EDGE_DIMS) + ids)
    agg = ",\n  ".join(f"sum({n}) AS {n}" for n in EDGE_SUMS)
    return (
        f"SELECT toStartOfHour(time) AS time,\n  {dims},\n  {agg},\n  max(inserted_at) AS inserted_at\n"
        f"FROM {{source}}\nGROUP BY time, {dims}"
    )


_FLOW_KEY = ("client_ip", "server_ip", "server_port", "proto")
_HOUR_BLOCK = "toStartOfHour(time)"
_DAY = "toYYYYMMDD(time)"


def _edge_table(name: str) -> TableSpec:
    return TableSpec(
        name=name,
        columns=_edge_columns(),
        engine="MergeTree",
        partition_by=_DAY,
        primary_key=(_HOUR_BLOCK, *_FLOW_KEY),
        order_by=(_HOUR_BLOCK, *_FLOW_KEY, "time"),
        indexes=("server_ip_bf server_ip TYPE bloom_filter GRANULARITY 4",),
        shard_key="cityHash64(client_ip, server_ip)",
        tier="raw" if name == "edge_1s" else "1m",
    )


def _endpoint_table(name: str, tier: str, hour_blocks: bool) -> TableSpec:
    ids = tuple(f"{f}_id" for f in IDENTITY_FIELDS)
    prefix = (_HOUR_BLOCK,) if hour_blocks else ()
    return TableSpec(
        name=name,
        columns=_endpoint_columns(),
        engine="AggregatingMergeTree",
        partition_by=_DAY,
        primary_key=(*prefix, "ip", "time"),
        order_by=(*prefix, "ip", "time", "vlan", "tunnel_id", "agent_id", *ids),
        shard_key="cityHash64(ip)",
        tier=tier,
        since=3,
    )


def _build_tables() -> dict[str, TableSpec]:
    ids = tuple(f"{side}_{f}_id" for side in ("client", "server") for f in IDENTITY_FIELDS)
    tables = [
        TableSpec(
            name="schema_version",
            columns=(
                Column("version", "UInt32"),
                Column("description", "String"),
                Column("applied_at", UTC_SECOND, DERIVED, "DEFAULT now()"),
            ),
            engine="MergeTree",
            order_by=("version",),
            tier="meta",
            ttl_column=None,
            since=0,
        ),
        TableSpec(
            name="ingest_log",
            columns=(
                Column("agent_id", "String"),
                Column("seq", "UInt64"),
                Column("kinds", "Array(LowCardinality(String))"),
                Column("rows", "Array(UInt64)", comment="rows per kind, same order as kinds"),
                _inserted_at(),
            ),
            engine="ReplacingMergeTree",
            partition_by="toYYYYMM(inserted_at)",
            order_by=("agent_id", "seq"),
            tier="meta",
        ),
        TableSpec(
            name="flow_log",
            columns=_flow_columns(),
            engine="MergeTree",
            partition_by="toYYYYMMDD(first)",
            primary_key=("toStartOfHour(first)", *_FLOW_KEY),
            order_by=("toStartOfHour(first)", *_FLOW_KEY, "first"),
            indexes=("server_ip_bf server_ip TYPE bloom_filter GRANULARITY 4",),
            shard_key="cityHash64(client_ip, server_ip)",
        ),
        _edge_table("edge_1s"),
        _edge_table("edge_1m"),
        _endpoint_table("endpoint_1s", "raw", True),
        _endpoint_table("endpoint_1m", "1m", True),
        TableSpec(
            name="edge_1h",
            columns=_edge_rollup_columns(),
            engine="AggregatingMergeTree",
            partition_by=_DAY,
            primary_key=(*_FLOW_KEY, "time"),
            order_by=(*_FLOW_KEY, "time", "vlan", "tunnel_id", *ANNOTATIONS, *ids),
            shard_key="cityHash64(client_ip, server_ip)",
            tier="1h",
            since=3,
        ),
        _endpoint_table("endpoint_1h", "1h", False),
    ]
    return {t.name: t for t in tables}


TABLES: dict[str, TableSpec] = _build_tables()

VIEWS: dict[str, ViewSpec] = {
    v.name: v
    for v in (
        ViewSpec("endpoint_1s_mv", "edge_1s", "endpoint_1s", _endpoint_select("time"), since=3),
        ViewSpec("endpoint_1m_mv", "edge_1m", "endpoint_1m", _endpoint_select("time"), since=3),
        ViewSpec("edge_1h_mv", "edge_1m", "edge_1h", _edge_hour_select(), since=3),
        ViewSpec(
            "endpoint_1h_mv",
            "edge_1m",
            "endpoint_1h",
            _endpoint_select("toStartOfHour(time)"),
            since=3,
        ),
    )
}
