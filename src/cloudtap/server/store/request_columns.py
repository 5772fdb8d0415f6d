"""Stored columns of application requests (``request_log``) and their rollups (``request_1s/1m/1h``).

``request_log`` comes from :func:`cloudtap.l7.records.requests_to_arrow` (the Arrow schema the agent ships
as kind ``requests``) with comments from ``L7_FIELDS``: ``req_ns`` / ``resp_ns`` are stored as
``req`` / ``resp`` times (``DateTime64(9)``, their ns names stay queryable as aliases), addresses as
``IPv6``, ``resource`` and ``host`` as plain ``String`` (many distinct values), the other texts as
``LowCardinality(String)``. Then the agent annotations, ``inserted_at`` and the identity ids, like flows.

The rollups keep, per bucket of request time and (client, server, port, protocol, agent, identities):
counts by outcome, the latency sum and maximum, and a t-digest of the answered requests' latencies.
"""

from __future__ import annotations

import pyarrow as pa

from cloudtap.l7.records import requests_to_arrow
from cloudtap.schema.request import L7_FIELDS, empty_requests
from cloudtap.server.store.columns import (
    COUNTER_CODEC,
    FLOW_REQUEST_FIELDS,
    IDENTITY_FIELDS,
    REQUESTS_SINCE,
    UTC_NANO,
    UTC_SECOND,
    annotation_columns,
    ch_type,
    identity_columns,
    inserted_at_column,
)
from cloudtap.server.store.table_spec import DERIVED, REQUIRED, Column

#: Request record times sent as Int64 ns, stored as ``DateTime64(9)`` under the name without ``_ns``.
REQUEST_NS_TIMES = ("req_ns", "resp_ns")
#: Texts with many distinct values: plain ``String`` (a dictionary per part would not pay).
PLAIN_TEXT = ("resource", "host")
#: Quantiles kept by every rollup's ``latency_digest`` (read with ``quantilesTDigestMerge`` of the same).
LATENCY_QUANTILES = (0.5, 0.9, 0.99)
QUANTILES_SQL = ", ".join(str(q) for q in LATENCY_QUANTILES)
DIGEST_TYPE = f"AggregateFunction(quantilesTDigest({QUANTILES_SQL}), Float32)"
#: Dimensions of the request rollups (plus ``time`` first and the identity ids of both sides).
REQUEST_DIMS = ("client_ip", "server_ip", "server_port", "l7_proto", "agent_id")
#: Summed metrics of the rollups: name, SQL over ``request_log`` rows, meaning.
REQUEST_SUMS = (
    ("requests", "count()", "requests (answered, timed out or unanswered)"),
    ("client_errors", "countIf(status = 'client_error')", "answered with a client error (HTTP 4xx...)"),
    ("server_errors", "countIf(status = 'server_error')", "answered with a server error (HTTP 5xx...)"),
    ("timeouts", "countIf(status IN ('timeout', 'unanswered'))", "no response: timed out or unanswered"),
    ("answered", "countIf(latency_us >= 0)", "requests with a response (their latency is known)"),
    ("latency_sum_us", "sumIf(toUInt64(latency_us), latency_us >= 0)", "sum of the answered latencies, us"),
)
_DOC = {name: doc for name, _, doc in L7_FIELDS}
_DOC.update(
    {
        "client_ip": "client IP (sender of the request)",
        "server_ip": "server IP",
        "l7_proto": "application protocol: http, dns, mysql, pgsql, redis",
        "status": "outcome: ok, client_error, server_error, timeout, unanswered",
    }
)


def request_arrow_schema() -> pa.Schema:
    """Arrow schema of a ``requests`` stream as the agent writes it (before annotations)."""
    return requests_to_arrow(empty_requests(0)).schema


def request_columns() -> tuple[Column, ...]:
    """Columns of ``request_log``."""
    cols: list[Column] = []
    for f in request_arrow_schema():
        doc = _DOC.get(f.name, "")
        if f.name in REQUEST_NS_TIMES:
            name = f.name.removesuffix("_ns")
            cols.append(Column(name, UTC_NANO, REQUIRED, "", doc, source=f.name, convert="ns"))
            cols.append(Column(f.name, "Int64", DERIVED, f"ALIAS toUnixTimestamp64Nano({name})", doc))
        elif f.name in PLAIN_TEXT:
            cols.append(Column(f.name, "String", comment=doc))
        else:
            cols.append(Column(f.name, ch_type(f.name, f.type), comment=doc))
    cols += annotation_columns()
    cols.append(inserted_at_column())
    return tuple(cols) + identity_columns("client") + identity_columns("server")


def _sum(name: str, doc: str) -> Column:
    return Column(name, "SimpleAggregateFunction(sum, UInt64)", DERIVED, "", doc, codec=COUNTER_CODEC)


def request_rollup_columns() -> tuple[Column, ...]:
    """Columns of ``request_1s`` / ``request_1m`` / ``request_1h``."""
    log = {c.name: c for c in request_columns()}
    cols = [Column("time", UTC_SECOND, DERIVED, comment="start of the bucket (request time)")]
    cols += [Column(n, log[n].type, DERIVED, "", log[n].comment) for n in REQUEST_DIMS]
    cols += [Column(c.name, c.type, DERIVED, "", c.comment) for c in identity_columns("client")]
    cols += [Column(c.name, c.type, DERIVED, "", c.comment) for c in identity_columns("server")]
    cols += [_sum(name, doc) for name, _, doc in REQUEST_SUMS]
    cols.append(
        Column("latency_max_us", "SimpleAggregateFunction(max, UInt64)", DERIVED, "", "slowest answered, us")
    )
    cols.append(Column("latency_digest", DIGEST_TYPE, DERIVED, "", "t-digest of the answered latencies (us)"))
    cols.append(
        Column("inserted_at", f"SimpleAggregateFunction(max, {UTC_SECOND})", DERIVED, "", "last insert")
    )
    return tuple(cols)


def request_rollup_select(bucket: str) -> str:
    """The views' SELECT from ``request_log`` (``{source}``), ``bucket``: e.g. ``toStartOfMinute``."""
    ids = [f"{side}_{f}_id" for side in ("client", "server") for f in IDENTITY_FIELDS]
    dims = ", ".join(list(REQUEST_DIMS) + ids)
    sums = ",\n  ".join(f"{expr} AS {name}" for name, expr, _ in REQUEST_SUMS)
    return (
        f"SELECT {bucket}(req) AS time,\n  {dims},\n  {sums},\n"
        "  toUInt64(maxIf(latency_us, latency_us >= 0)) AS latency_max_us,\n"
        f"  quantilesTDigestStateIf({QUANTILES_SQL})(toFloat32(latency_us), latency_us >= 0)"
        " AS latency_digest,\n"
        "  max(inserted_at) AS inserted_at\n"
        f"FROM {{source}}\nGROUP BY time, {dims}"
    )


__all__ = [
    "DIGEST_TYPE", "FLOW_REQUEST_FIELDS", "LATENCY_QUANTILES", "QUANTILES_SQL", "REQUESTS_SINCE",
    "REQUEST_DIMS", "REQUEST_SUMS", "request_arrow_schema", "request_columns", "request_rollup_columns",
    "request_rollup_select",
]  # fmt: skip
