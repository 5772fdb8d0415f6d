"""SQL helpers shared by the analyses: bound parameters, stored tables, metric columns, levels.

Only names from this module and integers computed here enter SQL text; every user value is bound as
a ``{pN:Type}`` parameter.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cloudtap.server.analyse.errors import AnalysisError
from cloudtap.server.query.catalog import PROTO_NAMES
from cloudtap.server.query.sql import Params as QueryParams
from cloudtap.server.store.ddl import ident, ip_text_sql

NS = 1_000_000_000
#: Sums every edge table keeps (client -> server per interval).
EDGE_SUMS = (
    "bytes_c2s", "bytes_s2c", "packets_c2s", "packets_s2c", "retrans",
    "flows_opened", "flows_closed", "flows_failed", "rtt_sum_us", "rtt_count",
)  # fmt: skip
#: Topology / grouping levels: ``ip`` groups by address, the others by the identity id columns.
LEVELS = ("ip", "subnet", "vm", "host", "project")
#: Flow-log close types of a failed handshake (as the meter counts ``flows_failed``).
FAILED_CLOSE_TYPES = ("syn_unanswered", "server_refused", "half_open")


class Params(QueryParams):
    """The query engine's bound parameters, plus addresses."""

    def ip(self, value: str, field: str) -> str:
        """``toIPv6(...)`` of an address (IPv4 as IPv4-mapped)."""
        return f"toIPv6({self.bind(as_v6(parse_ip(value, field)), 'String')})"


def parse_ip(value: Any, field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address, or an :class:`AnalysisError` naming ``field``."""
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise AnalysisError(f"{field}: {value!r} is not an IP address", field) from None


def as_v6(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Text of ``ip`` as stored (IPv4 as ``::ffff:a.b.c.d``)."""
    return f"::ffff:{ip}" if ip.version == 4 else str(ip)


def parse_proto(value: Any, field: str = "proto") -> int:
    """A protocol number from a number or a name (``tcp``, ``udp``...)."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in PROTO_NAMES:
            return PROTO_NAMES[low]
        if low.isdigit():
            value = int(low)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    raise AnalysisError(f"{field}: {value!r} is not a protocol number or name", field, PROTO_NAMES)


def proto_name(number: int) -> str:
    """``6`` -> ``tcp``; unknown numbers as text."""
    return next((k for k, v in PROTO_NAMES.items() if v == number), str(number))


def table(database: str, name: str) -> str:
    """Quoted ``db.table``."""
    return f"{ident(database)}.{ident(name)}"


def ip_text(column: str) -> str:
    """SQL rendering an address column as text (dotted quad for IPv4)."""
    return ip_text_sql(ident(column))


def time_where(t0_ns: int, t1_ns: int, params: Params, column: str = "time") -> str:
    """``[t0, t1)`` on a second-resolution time column (rows start on whole seconds)."""
    s0, s1 = -(-t0_ns // NS), -(-t1_ns // NS)
    col = ident(column)
    return f"{col} >= toDateTime({params.bind(s0, 'Int64')}, 'UTC') AND {col} < toDateTime({params.bind(s1, 'Int64')}, 'UTC')"


def flow_time_where(t0_ns: int, t1_ns: int, params: Params) -> str:
    """``[t0, t1)`` on the flow log's ``first`` (ns)."""
    a, b = params.bind(t0_ns, "Int64"), params.bind(t1_ns, "Int64")
    return f"first >= fromUnixTimestamp64Nano({a}, 'UTC') AND first < fromUnixTimestamp64Nano({b}, 'UTC')"


def bucket_sql(step_s: int, column: str = "time") -> str:
    """Start of the ``step_s`` bucket of a row, in epoch seconds (Int64)."""
    return f"intDiv(toInt64(toUnixTimestamp({ident(column)})), {int(step_s)}) * {int(step_s)}"


def check_level(level: str) -> str:
    """``level`` if known, else an :class:`AnalysisError` listing the levels."""
    if level not in LEVELS:
        raise AnalysisError(f"unknown level {level!r}", "level", LEVELS)
    return level


def side_key(level: str, side: str) -> tuple[str, str]:
    """(SQL value, kind) of one side of an edge row at ``level``: the IP text, or the identity id."""
    if level == "ip":
        return ip_text(f"{side}_ip"), "ip"
    return ident(f"{side}_{level}_id"), level
