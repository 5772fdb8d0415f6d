"""The flow store's catalog: which tables and materialized views exist (columns in ``columns.py``, the
DDL text in ``table_spec.py``, quoting in ``cloudtap.clickhouse_sql``; their names are re-exported here).

Tables (see docs/storage.md for the choice of keys):

* ``flow_log`` <- kind ``flows``; ``edge_1s`` <- ``edges_1s``; ``edge_1m`` <- ``edges_60s`` (MergeTree).
* ``endpoint_1s`` / ``endpoint_1m`` <- materialized views over ``edge_1s`` / ``edge_1m`` (each edge feeds
  its client endpoint and its server endpoint); ``edge_1h`` / ``endpoint_1h`` <- views over ``edge_1m``.
  Rollups are ``AggregatingMergeTree`` with ``SimpleAggregateFunction(sum, ...)`` metrics.
* ``request_log`` <- kind ``requests`` (MergeTree); ``request_1s`` / ``request_1m`` / ``request_1h`` <- views
  over ``request_log`` (bucket = request time), ``AggregatingMergeTree`` with a latency t-digest.
* ``ingest_log`` (batches stored, for exactly-once) and ``schema_version`` (migrations applied).
"""

from __future__ import annotations

from cloudtap.clickhouse_sql import ident, ip_text_sql, quote
from cloudtap.meter.edges import EDGE_SUMS
from cloudtap.server.store.columns import (
    ANNOTATIONS,
    EDGE_DIMS,
    ENDPOINT_DIMS,
    ENDPOINT_SUMS,
    IDENTITY_FIELDS,
    NS_TIMES,
    UTC_NANO,
    UTC_SECOND,
    edge_arrow_schema,
    edge_columns,
    edge_rollup_columns,
    endpoint_columns,
    flow_columns,
    identity_columns,
    inserted_at_column,
)
from cloudtap.server.store.request_columns import (
    REQUEST_DIMS,
    REQUESTS_SINCE,
    request_columns,
    request_rollup_columns,
    request_rollup_select,
)
from cloudtap.server.store.table_spec import (
    DEDUP_WINDOW,
    DEDUP_WINDOW_SECONDS,
    DERIVED,
    OPTIONAL,
    REQUIRED,
    Column,
    DdlContext,
    TableSpec,
    ViewSpec,
    add_columns_sql,
    backfill_sql,
    create_table_sql,
    create_view_sql,
    ttl_clause,
)

#: Stream kind (what agents ship) -> table it is stored in.
KIND_TABLES: dict[str, str] = {
    "flows": "flow_log",
    "edges_1s": "edge_1s",
    "edges_60s": "edge_1m",
    "requests": "request_log",
}


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
    groups = ", ".join(["time", *ENDPOINT_DIMS] + [f"{f}_id" for f in IDENTITY_FIELDS])
    return (
        f"SELECT {time_expr} AS time,\n  if(side = 0, client_ip, server_ip) AS ip,\n  vlan, tunnel_id, agent_id,\n  "
        f"{ids},\n  {agg},\n  max(inserted_at) AS inserted_at\n"
        f"FROM {{source}} ARRAY JOIN [0, 1] AS side\nGROUP BY {groups}"
    )


def _edge_hour_select() -> str:
    ids = [f"{side}_{f}_id" for side in ("client", "server") for f in IDENTITY_FIELDS]
    dims = ", ".join(list(EDGE_DIMS) + ids)
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
        columns=edge_columns(),
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
        columns=endpoint_columns(),
        engine="AggregatingMergeTree",
        partition_by=_DAY,
        primary_key=(*prefix, "ip", "time"),
        order_by=(*prefix, "ip", "time", "vlan", "tunnel_id", "agent_id", *ids),
        shard_key="cityHash64(ip)",
        tier=tier,
        since=3,
    )


_REQUEST_KEY = ("client_ip", "server_ip", "server_port", "l7_proto")


def _request_tables() -> list[TableSpec]:
    ids = tuple(f"{side}_{f}_id" for side in ("client", "server") for f in IDENTITY_FIELDS)
    rest = tuple(d for d in REQUEST_DIMS if d not in _REQUEST_KEY)
    log = TableSpec(
        name="request_log",
        columns=request_columns(),
        engine="MergeTree",
        partition_by="toYYYYMMDD(req)",
        primary_key=("toStartOfHour(req)", *_REQUEST_KEY),
        order_by=("toStartOfHour(req)", *_REQUEST_KEY, "req"),
        indexes=("server_ip_bf server_ip TYPE bloom_filter GRANULARITY 4",),
        shard_key="cityHash64(client_ip, server_ip)",
        since=REQUESTS_SINCE,
    )
    rollups = [
        TableSpec(
            name=name,
            columns=request_rollup_columns(),
            engine="AggregatingMergeTree",
            partition_by=_DAY,
            primary_key=(*prefix, *_REQUEST_KEY, "time"),
            order_by=(*prefix, *_REQUEST_KEY, "time", *rest, *ids),
            shard_key="cityHash64(client_ip, server_ip)",
            tier=tier,
            since=REQUESTS_SINCE,
        )
        for name, tier, prefix in (
            ("request_1s", "raw", (_HOUR_BLOCK,)),
            ("request_1m", "1m", (_HOUR_BLOCK,)),
            ("request_1h", "1h", ()),
        )
    ]
    return [log, *rollups]


#: Rollup table of request_log -> the function bucketing request time.
REQUEST_ROLLUPS = {
    "request_1s": "toStartOfSecond",
    "request_1m": "toStartOfMinute",
    "request_1h": "toStartOfHour",
}


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
                inserted_at_column(),
            ),
            engine="ReplacingMergeTree",
            partition_by="toYYYYMM(inserted_at)",
            order_by=("agent_id", "seq"),
            tier="meta",
        ),
        TableSpec(
            name="flow_log",
            columns=flow_columns(),
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
            columns=edge_rollup_columns(),
            engine="AggregatingMergeTree",
            partition_by=_DAY,
            primary_key=(*_FLOW_KEY, "time"),
            order_by=(*_FLOW_KEY, "time", "vlan", "tunnel_id", *ANNOTATIONS, *ids),
            shard_key="cityHash64(client_ip, server_ip)",
            tier="1h",
            since=3,
        ),
        _endpoint_table("endpoint_1h", "1h", False),
        *_request_tables(),
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
        *(
            ViewSpec(f"{table}_mv", "request_log", table, request_rollup_select(bucket), since=REQUESTS_SINCE)
            for table, bucket in REQUEST_ROLLUPS.items()
        ),
    )
}

__all__ = [
    "ANNOTATIONS", "DEDUP_WINDOW", "DEDUP_WINDOW_SECONDS", "DERIVED", "ENDPOINT_SUMS", "IDENTITY_FIELDS",
    "KIND_TABLES", "NS_TIMES", "OPTIONAL", "REQUESTS_SINCE", "REQUEST_ROLLUPS", "REQUIRED", "TABLES",
    "UTC_NANO", "UTC_SECOND", "VIEWS", "Column",
    "DdlContext", "TableSpec", "ViewSpec", "add_columns_sql", "backfill_sql", "create_table_sql",
    "create_view_sql", "edge_arrow_schema", "ident", "identity_columns", "ip_text_sql", "quote", "ttl_clause",
]  # fmt: skip
