"""The stored columns, derived from the Arrow schemas the agent itself produces (one source of truth).

Flow columns come from :func:`cloudtap.meter.records.empty_table` with comments from ``FLOW_FIELDS``;
edge columns from :func:`cloudtap.meter.edges.aggregate_edges` + :func:`~cloudtap.meter.edges.edges_with_text`.
Addresses become ``IPv6`` (IPv4 as ``::ffff:a.b.c.d``), enum names ``LowCardinality(String)``, integers
keep their width. Rollup and endpoint columns are sums over them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import EDGE_SUMS, aggregate_edges, edges_with_text
from cloudtap.meter.records import ADDRESS_COLUMNS, empty_table
from cloudtap.schema.flow import FLOW_COUNTERS, FLOW_FIELDS
from cloudtap.server.store.table_spec import DERIVED, OPTIONAL, REQUIRED, Column

#: Cloud identity fields, one ``<side>_<field>_id`` UInt32 column per side (0 = not known yet).
IDENTITY_FIELDS = ("region", "project", "host", "vm", "subnet", "pod", "service")
#: Agent annotations added to every stream (see ``cloudtap.agent.output``).
ANNOTATIONS = ("agent_id", "interface_name", "vm_domain", "vm_mac")
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
#: Schema version that added application requests: ``request_log``, its rollups, and these flow fields.
REQUESTS_SINCE = 4
#: Flow record fields carrying the requests concluded on a flow (end of ``FLOW_FIELDS``): stored after
#: the identity columns so that an upgraded ``flow_log`` has the same column order as a new one, and
#: taken from ``FLOW_FIELDS`` (optional, default 0) whether or not the flow output carries them yet.
FLOW_REQUEST_FIELDS = ("requests", "request_errors", "requests_answered", "request_latency_sum_us")


def ch_type(name: str, typ: pa.DataType) -> str:
    if name in _ADDRESSES or name in ("client_ip", "server_ip"):
        return "IPv6"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "LowCardinality(String)"
    return _ARROW_TO_CH[typ]


def annotation_columns() -> tuple[Column, ...]:
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


def inserted_at_column() -> Column:
    return Column(
        "inserted_at", UTC_SECOND, DERIVED, "DEFAULT now()", "when the row reached the store (retention)"
    )


def _flow_request_columns() -> tuple[Column, ...]:
    """The request counters ``FLOW_FIELDS`` has (agents that do not send them store 0)."""
    types = {name: np.dtype(typ) for name, typ, _ in FLOW_FIELDS}
    return tuple(
        Column(
            name,
            ch_type(name, pa.from_numpy_dtype(types[name])),
            OPTIONAL,
            "DEFAULT 0",
            _FLOW_DOC[name],
            REQUESTS_SINCE,
            codec=COUNTER_CODEC,
        )
        for name in FLOW_REQUEST_FIELDS
        if name in types
    )


def flow_columns() -> tuple[Column, ...]:
    cols: list[Column] = []
    for f in empty_table().schema:
        if f.name in FLOW_REQUEST_FIELDS:  # stored last (see FLOW_REQUEST_FIELDS)
            continue
        doc = _FLOW_DOC.get(f.name, "")
        if f.name in NS_TIMES:  # stored once, as time; the ns name stays queryable
            name = f.name.removesuffix("_ns")
            cols.append(Column(name, UTC_NANO, REQUIRED, "", doc, source=f.name, convert="ns"))
            cols.append(Column(f.name, "Int64", DERIVED, f"ALIAS toUnixTimestamp64Nano({name})", doc))
        else:
            codec = COUNTER_CODEC if f.name in _FLOW_COUNTER_SET else ""
            cols.append(Column(f.name, ch_type(f.name, f.type), comment=doc, codec=codec))
    cols += annotation_columns()
    cols.append(inserted_at_column())
    ids = identity_columns("client") + identity_columns("server")
    return tuple(cols) + ids + _flow_request_columns()


def edge_arrow_schema() -> pa.Schema:
    """Arrow schema of an edge stream as the agent writes it (before annotations)."""
    return edges_with_text(aggregate_edges(np.zeros(0, EDGE_DELTA_DTYPE), 1.0)).schema


def edge_columns() -> tuple[Column, ...]:
    cols: list[Column] = []
    for f in edge_arrow_schema():
        doc = _EDGE_DOC.get(f.name, "")
        if f.name == "time_ns":  # edges are at whole seconds or coarser
            cols.append(Column("time", UTC_SECOND, REQUIRED, "", doc, source="time_ns", convert="ns"))
            cols.append(
                Column("time_ns", "Int64", DERIVED, "ALIAS toInt64(toUnixTimestamp(time)) * 1000000000", doc)
            )
        else:
            typ = ch_type(f.name, f.type)
            codec = COUNTER_CODEC if f.name in EDGE_SUMS and typ.startswith("UInt") else ""
            cols.append(Column(f.name, typ, comment=doc, codec=codec))
    cols += annotation_columns()
    cols.append(inserted_at_column())
    return tuple(cols) + identity_columns("client") + identity_columns("server")


def _sum(col: Column) -> Column:
    return Column(col.name, f"SimpleAggregateFunction(sum, {col.type})", DERIVED, "", col.comment, col.since)


_MAX_INSERTED = Column(
    "inserted_at", f"SimpleAggregateFunction(max, {UTC_SECOND})", DERIVED, "", "last insert"
)
EDGE_DIMS = ("client_ip", "server_ip", "server_port", "proto", "vlan", "tunnel_id") + ANNOTATIONS
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
ENDPOINT_DIMS = ("ip", "vlan", "tunnel_id", "agent_id")


def edge_rollup_columns() -> tuple[Column, ...]:
    edge = {c.name: c for c in edge_columns()}
    cols = [Column("time", UTC_SECOND, DERIVED, comment="start of the hour")]
    cols += [Column(n, edge[n].type, DERIVED, "", edge[n].comment) for n in EDGE_DIMS]
    cols += [Column(c.name, c.type, DERIVED, "", c.comment) for c in identity_columns("client")]
    cols += [Column(c.name, c.type, DERIVED, "", c.comment) for c in identity_columns("server")]
    cols += [_sum(edge[n]) for n in EDGE_SUMS]
    return tuple(cols) + (_MAX_INSERTED,)


def endpoint_columns() -> tuple[Column, ...]:
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
