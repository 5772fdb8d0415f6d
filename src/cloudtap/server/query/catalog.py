"""What can be queried: dimensions and metrics of each logical table, derived from the store's DDL.

Logical tables and the stored tables behind them:

* ``flows`` -> ``flow_log`` (one row per flow record; percentiles, min/max/mean per record)
* ``edges`` -> ``edge_1s`` / ``edge_1m`` / ``edge_1h`` (client -> server:port per interval; sums only)
* ``endpoints`` -> ``endpoint_1s`` / ``endpoint_1m`` / ``endpoint_1h`` (one IP per interval; sums only)
* ``requests`` -> ``request_1s`` / ``request_1m`` / ``request_1h`` (application requests per client ->
  server:port and interval: counts, error rate, mean/max latency and p50/p90/p99 from the rollups' t-digest)
* ``request_log`` -> ``request_log`` (one row per application request; like flows, any percentile)

Dimensions are the stored columns that are neither times nor counters, so a column the DDL adds
(for example an identity id) is queryable without touching this module. Metrics are formulas over
stored columns; one exists on a stored table when all its columns do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.metric import Metric
from cloudtap.server.query.request_metrics import request_log_metrics, request_metrics
from cloudtap.server.store.ddl import TABLES, ip_text_sql

NS_PER_S = 1_000_000_000
#: Interval name -> width in ns.
INTERVALS = {"1s": NS_PER_S, "1m": 60 * NS_PER_S, "1h": 3600 * NS_PER_S}
#: Logical table -> interval (None for the flow log) -> stored table.
PHYSICAL: dict[str, dict[str | None, str]] = {
    "flows": {None: "flow_log"},
    "edges": {"1s": "edge_1s", "1m": "edge_1m", "1h": "edge_1h"},
    "endpoints": {"1s": "endpoint_1s", "1m": "endpoint_1m", "1h": "endpoint_1h"},
    "requests": {"1s": "request_1s", "1m": "request_1m", "1h": "request_1h"},
    "request_log": {None: "request_log"},
}
#: Logical tables of records (one row per flow record / request): their time column and its ns alias.
RECORD_TIMES = {"flows": ("first", "first_ns"), "request_log": ("req", "req_ns")}
#: Widest time range one query may cover, per stored table.
MAX_RANGE_NS = {
    "flow_log": 31 * 86400 * NS_PER_S,
    "edge_1s": 2 * 86400 * NS_PER_S,
    "endpoint_1s": 2 * 86400 * NS_PER_S,
    "edge_1m": 93 * 86400 * NS_PER_S,
    "endpoint_1m": 93 * 86400 * NS_PER_S,
    "edge_1h": 3660 * 86400 * NS_PER_S,
    "endpoint_1h": 3660 * 86400 * NS_PER_S,
    "request_log": 31 * 86400 * NS_PER_S,
    "request_1s": 2 * 86400 * NS_PER_S,
    "request_1m": 93 * 86400 * NS_PER_S,
    "request_1h": 3660 * 86400 * NS_PER_S,
}
#: Stored columns that are times (never dimensions).
_TIME_COLUMNS = {"time", "time_ns", "first", "last", "first_ns", "last_ns", "start_ns", "inserted_at", "req",
                 "resp", "req_ns", "resp_ns"}  # fmt: skip
#: Stored columns that are per-row counters / measurements (never dimensions).
_MEASURES = {
    "packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c", "l2_bytes_c2s", "l2_bytes_s2c",
    "payload_bytes_c2s", "payload_bytes_s2c", "rtt_client_us", "rtt_server_us", "retrans_c2s", "retrans_s2c",
    "zero_window_c2s", "zero_window_s2c", "ooo_c2s", "ooo_s2c", "syn_count", "synack_count", "retrans",
    "flows_opened", "flows_closed", "flows_failed", "rtt_sum_us", "rtt_count", "packets_out", "packets_in",
    "bytes_out", "bytes_in", "flows_as_client", "flows_as_server", "failed_as_client", "failed_as_server",
    "tcp_flags_c2s", "tcp_flags_s2c", "requests", "request_errors", "requests_answered",
    "request_latency_sum_us",
    "latency_us", "client_errors", "server_errors", "timeouts", "answered", "latency_sum_us", "latency_max_us",
}  # fmt: skip
_MAC_COLUMNS = {"client_mac", "server_mac"}
#: Flow records of flows that failed (no completed handshake), as the meter counts ``flows_failed``.
FAILED_CLOSE_TYPES = ("syn_unanswered", "server_refused", "half_open")
#: Protocol names accepted as ``proto`` filter values.
PROTO_NAMES = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "icmp6": 58, "sctp": 132}


@dataclass(frozen=True)
class Dimension:
    """A column to filter and group by."""

    name: str
    kind: str  #: ip | int | text | mac
    column: str  #: stored column (group / filter on it)
    ch_type: str

    @property
    def output(self) -> str:
        """SQL rendering the column for output (text addresses and MACs)."""
        if self.kind == "ip":
            return ip_text_sql(self.column)
        if self.kind == "mac":
            return f"MACNumToString({self.column})"
        return self.column


@dataclass(frozen=True)
class StoredTable:
    """One stored table as the query side sees it."""

    name: str
    logical: str
    interval: str | None
    columns: dict[str, str]  #: name -> ClickHouse type
    dimensions: dict[str, Dimension]
    metrics: dict[str, Metric]
    time_column: str  #: DateTime / DateTime64 column of the primary key
    time_ns: str  #: SQL giving the row's time in ns
    aggregating: bool  #: rollup (AggregatingMergeTree): raw listings need FINAL
    raw_default: tuple[str, ...] = field(default=())

    @property
    def width_ns(self) -> int:
        """Interval width (0 for flow records)."""
        return INTERVALS[self.interval] if self.interval else 0


def _pair(base: str, a: str, b: str, unit: str, doc: str, record: bool) -> list[Metric]:
    both = Metric(base, unit, f"{doc}, both directions", (f"{base}_{a}", f"{base}_{b}"),
                  value=f"({base}_{a} + {base}_{b})", record_level=record)  # fmt: skip
    one = [Metric(f"{base}_{d}", unit, f"{doc}, {d}", (f"{base}_{d}",), value=f"{base}_{d}", record_level=record)
           for d in (a, b)]  # fmt: skip
    return [both, *one]


def _flow_metrics() -> list[Metric]:
    out: list[Metric] = []
    for base, unit, doc in (
        ("bytes", "bytes", "IP bytes"),
        ("packets", "packets", "packets"),
        ("l2_bytes", "bytes", "frame bytes on the wire"),
        ("payload_bytes", "bytes", "L4 payload bytes"),
        ("retrans", "segments", "TCP retransmissions"),
        ("zero_window", "segments", "TCP zero-window segments"),
        ("ooo", "segments", "TCP out-of-order segments"),
    ):
        out += _pair(base, "c2s", "s2c", unit, doc, True)
    out += [
        Metric("syn_count", "segments", "SYN segments from clients", ("syn_count",), value="syn_count",
               record_level=True),
        Metric("records", "records", "flow records", (), count="count()"),
        Metric("flows", "flows", "flows opened (first records)", ("record_seq",), count="countIf(record_seq = 0)"),
        Metric("flows_closed", "flows", "flows that ended", ("close_type",),
               count="countIf(close_type != 'ongoing')"),
        Metric("flows_failed", "flows", "flows that ended without a completed handshake", ("close_type",),
               count="countIf(close_type IN ('" + "', '".join(FAILED_CLOSE_TYPES) + "'))"),
    ]  # fmt: skip
    first = "record_seq = 0"
    for name, value, cond, doc in (
        ("rtt", "(rtt_client_us + rtt_server_us)", "rtt_client_us >= 0 AND rtt_server_us >= 0",
         "handshake RTT (client + server halves), us, once per flow"),
        ("rtt_client", "rtt_client_us", "rtt_client_us >= 0", "handshake RTT client half, us"),
        ("rtt_server", "rtt_server_us", "rtt_server_us >= 0", "handshake RTT server half, us"),
    ):  # fmt: skip
        out.append(Metric(name, "us", doc, ("rtt_client_us", "rtt_server_us", "record_seq"), value=value,
                          cond=f"{cond} AND {first}", record_level=True))  # fmt: skip
    return out


def _edge_metrics() -> list[Metric]:
    out = _pair("bytes", "c2s", "s2c", "bytes", "IP bytes", False)
    out += _pair("packets", "c2s", "s2c", "packets", "packets", False)
    out += [
        Metric("retrans", "segments", "TCP retransmissions, both directions", ("retrans",), value="retrans"),
        Metric("flows", "flows", "flows opened", ("flows_opened",), value="flows_opened"),
        Metric("flows_opened", "flows", "flows opened", ("flows_opened",), value="flows_opened"),
        Metric("flows_closed", "flows", "flows that ended", ("flows_closed",), value="flows_closed"),
        Metric("flows_failed", "flows", "flows that ended without a completed handshake", ("flows_failed",),
               value="flows_failed"),
        Metric("rtt", "us", "mean handshake RTT, us", ("rtt_sum_us", "rtt_count"),
               ratio=("rtt_sum_us", "rtt_count")),
    ]  # fmt: skip
    return out


def _endpoint_metrics() -> list[Metric]:
    out = _pair("bytes", "out", "in", "bytes", "IP bytes sent/received", False)
    out += _pair("packets", "out", "in", "packets", "packets sent/received", False)
    out += [
        Metric("flows", "flows", "flows opened by or to the IP", ("flows_as_client", "flows_as_server"),
               value="(flows_as_client + flows_as_server)"),
        Metric("flows_as_client", "flows", "flows the IP opened", ("flows_as_client",), value="flows_as_client"),
        Metric("flows_as_server", "flows", "flows opened to the IP", ("flows_as_server",), value="flows_as_server"),
        Metric("flows_failed", "flows", "failed flows by or to the IP", ("failed_as_client", "failed_as_server"),
               value="(failed_as_client + failed_as_server)"),
        Metric("failed_as_client", "flows", "failed flows the IP opened", ("failed_as_client",),
               value="failed_as_client"),
        Metric("failed_as_server", "flows", "failed flows opened to the IP", ("failed_as_server",),
               value="failed_as_server"),
        Metric("retrans", "segments", "TCP retransmissions on the IP's edges", ("retrans",), value="retrans"),
        Metric("rtt", "us", "mean handshake RTT, us", ("rtt_sum_us", "rtt_count"),
               ratio=("rtt_sum_us", "rtt_count")),
    ]  # fmt: skip
    return out


_METRICS = {
    "flows": _flow_metrics,
    "edges": _edge_metrics,
    "endpoints": _endpoint_metrics,
    "requests": request_metrics,
    "request_log": request_log_metrics,
}
_RAW_DEFAULT = {
    "flows": ("first", "proto", "client_ip", "client_port", "server_ip", "server_port", "packets_c2s",
              "packets_s2c", "bytes_c2s", "bytes_s2c", "rtt_client_us", "rtt_server_us", "retrans_c2s",
              "retrans_s2c", "close_type", "agent_id", "interface_name"),
    "edges": ("time", "client_ip", "server_ip", "server_port", "proto", "packets_c2s", "packets_s2c", "bytes_c2s",
              "bytes_s2c", "retrans", "flows_opened", "flows_failed", "rtt_sum_us", "rtt_count", "agent_id"),
    "endpoints": ("time", "ip", "bytes_out", "bytes_in", "packets_out", "packets_in", "flows_as_client",
                  "flows_as_server", "retrans", "agent_id"),
    "requests": ("time", "client_ip", "server_ip", "server_port", "l7_proto", "requests", "client_errors",
                 "server_errors", "timeouts", "answered", "latency_sum_us", "latency_max_us", "agent_id"),
    "request_log": ("req", "l7_proto", "client_ip", "client_port", "server_ip", "server_port", "latency_us",
                    "request_type", "resource", "host", "status", "code", "error", "agent_id", "interface_name"),
}  # fmt: skip


def _base_type(ch_type: str) -> str:
    t = ch_type
    for wrapper in ("SimpleAggregateFunction(sum, ", "SimpleAggregateFunction(max, ", "LowCardinality("):
        if t.startswith(wrapper):
            t = t[len(wrapper) : -1]
    return t


def _dimension(name: str, ch_type: str) -> Dimension | None:
    if name in _TIME_COLUMNS or name in _MEASURES:
        return None
    base = _base_type(ch_type)
    if name in _MAC_COLUMNS:
        kind = "mac"
    elif base == "IPv6" or base == "IPv4":
        kind = "ip"
    elif base.startswith(("UInt", "Int")):
        kind = "int"
    elif base == "String":
        kind = "text"
    else:
        return None
    return Dimension(name, kind, name, base)


def _stored(logical: str, interval: str | None, name: str) -> StoredTable:
    spec = TABLES[name]
    columns = {c.name: c.type for c in spec.columns}
    dims = {d.name: d for d in (_dimension(n, t) for n, t in columns.items()) if d is not None}
    metrics = {m.name: m for m in _METRICS[logical]() if all(c in columns for c in m.columns)}
    if logical in RECORD_TIMES:
        time_column, time_ns = RECORD_TIMES[logical]
    elif "time_ns" in columns:
        time_column, time_ns = "time", "time_ns"
    else:
        time_column, time_ns = "time", f"(toInt64(toUnixTimestamp({_q('time')})) * {NS_PER_S})"
    raw = tuple(c for c in _RAW_DEFAULT[logical] if c in columns)
    return StoredTable(name, logical, interval, columns, dims, metrics, time_column, time_ns,
                       spec.engine == "AggregatingMergeTree", raw)  # fmt: skip


def _q(name: str) -> str:
    return f"`{name}`"


@cache
def stored_tables() -> dict[str, StoredTable]:
    """Every stored table the query side reads, by stored name."""
    return {name: _stored(logical, interval, name)
            for logical, by_interval in PHYSICAL.items() for interval, name in by_interval.items()}  # fmt: skip


def candidates(logical: str) -> list[StoredTable]:
    """Stored tables of a logical table, finest interval first."""
    if logical not in PHYSICAL:
        raise QueryError(f"unknown table {logical!r}", "table", PHYSICAL)
    tables = stored_tables()
    return [tables[name] for name in PHYSICAL[logical].values()]


def dimension_names(logical: str) -> list[str]:
    """Dimensions of a logical table (on any of its intervals)."""
    return sorted({d for t in candidates(logical) for d in t.dimensions})


def metric_names(logical: str) -> list[str]:
    """Metrics of a logical table (on any of its intervals)."""
    return sorted({m for t in candidates(logical) for m in t.metrics})


def describe() -> dict[str, object]:
    """The whole catalog as plain data (``GET /api/v1/query/catalog``)."""
    out: dict[str, object] = {}
    for logical in PHYSICAL:
        tables = candidates(logical)
        metrics: dict[str, object] = {}
        for t in tables:
            for m in t.metrics.values():
                metrics.setdefault(m.name, {"unit": m.unit, "doc": m.doc, "aggs": list(m.aggs),
                                            "default_agg": m.default_agg})  # fmt: skip
        dims: dict[str, object] = {}
        for t in tables:
            for d in t.dimensions.values():
                dims.setdefault(d.name, {"kind": d.kind, "intervals": []})
                dims[d.name]["intervals"].append(t.interval)  # type: ignore[index]
        out[logical] = {
            "intervals": [t.interval for t in tables if t.interval],
            "dimensions": dims,
            "metrics": metrics,
            "columns": sorted({c for t in tables for c in t.columns}),
        }
    return out
