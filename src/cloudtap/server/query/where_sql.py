"""WHERE clauses of a query: its time range and filters, every user value a bound parameter."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from cloudtap.server.query.catalog import NS_PER_S, PROTO_NAMES, Dimension, StoredTable
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Filter
from cloudtap.server.query.table_choice import either_side, record_measure
from cloudtap.server.store.ddl import ident

_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
_SQL_OPS = {"eq": "=", "ne": "!=", "gt": ">", "lt": "<", "ge": ">=", "le": "<="}


class Params:
    """Collects bound parameters; returns their ``{name:Type}`` placeholders."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def bind(self, value: Any, ch_type: str) -> str:
        """Placeholder for ``value`` as ClickHouse ``ch_type``."""
        name = f"p{len(self.values)}"
        self.values[name] = value
        return "{" + name + ":" + ch_type + "}"


def time_where(table: StoredTable, t0: int, t1: int, params: Params) -> str:
    col = ident(table.time_column)
    if table.interval is None:  # records: DateTime64(9) times
        a, b = params.bind(t0, "Int64"), params.bind(t1, "Int64")
        return f"{col} >= fromUnixTimestamp64Nano({a}, 'UTC') AND {col} < fromUnixTimestamp64Nano({b}, 'UTC')"
    s0, s1 = -(-t0 // NS_PER_S), -(-t1 // NS_PER_S)  # rows start on whole seconds: ceil keeps [t0, t1)
    a, b = params.bind(s0, "Int64"), params.bind(s1, "Int64")
    return f"{col} >= toDateTime({a}, 'UTC') AND {col} < toDateTime({b}, 'UTC')"


def _int_value(value: Any, dim: str, ch_type: str) -> int:
    if isinstance(value, str) and dim == "proto" and value.lower() in PROTO_NAMES:
        return PROTO_NAMES[value.lower()]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value.strip()):
        value = int(value)
    if not isinstance(value, int):
        hint = f" (or one of {', '.join(PROTO_NAMES)})" if dim == "proto" else ""
        raise QueryError(f"filter {dim}: {value!r} is not an integer{hint}", "filters")
    lo = 0 if ch_type.startswith("UInt") else -(2**63)
    if not lo <= value <= _UINT64_MAX:
        raise QueryError(f"filter {dim}: {value} is out of range", "filters")
    return value


def _ip_value(value: Any, dim: str) -> str:
    try:
        ip = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise QueryError(
            f"filter {dim}: {value!r} is not an IP address (use op prefix for a CIDR)", "filters"
        ) from None
    return _as_v6(ip)


def _as_v6(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"::ffff:{ip}" if ip.version == 4 else str(ip)


def _mac_value(value: Any, dim: str) -> int:
    text = str(value).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}", text):
        raise QueryError(f"filter {dim}: {value!r} is not a MAC address like 52:54:00:12:34:56", "filters")
    return int(re.sub(r"[:-]", "", text), 16)


def _bind_dim_value(dim: Dimension, value: Any, params: Params) -> str:
    if dim.kind == "ip":
        return f"toIPv6({params.bind(_ip_value(value, dim.name), 'String')})"
    if dim.kind == "mac":
        return params.bind(_mac_value(value, dim.name), "UInt64")
    if dim.kind == "int":
        v = _int_value(value, dim.name, dim.ch_type)
        return params.bind(v, "UInt64" if v > _INT64_MAX else "Int64")
    if isinstance(value, float):
        value = repr(value)
    return params.bind(str(value), "String")


def filter_sql(table: StoredTable, f: Filter, params: Params) -> str:
    dim = table.dimensions.get(f.dim)
    if dim is None:
        sides = either_side(table, f.dim)
        if sides is not None:
            return _either_side_sql(sides, f, params)
        return _measurefilter_sql(table, f, params)
    col = ident(dim.column)
    if f.op in ("in", "not_in"):
        values = f.value if isinstance(f.value, list) else [f.value]
        bound = ", ".join(_bind_dim_value(dim, v, params) for v in values)
        return f"{col} {'NOT IN' if f.op == 'not_in' else 'IN'} ({bound})"
    if f.op == "prefix":
        if dim.kind == "ip":
            try:
                net = ipaddress.ip_network(str(f.value).strip(), strict=False)
            except ValueError:
                raise QueryError(
                    f"filter {f.dim}: {f.value!r} is not a CIDR like 10.0.0.0/8", "filters"
                ) from None
            lo = params.bind(_as_v6(net.network_address), "String")
            hi = params.bind(_as_v6(net.broadcast_address), "String")
            return f"{col} BETWEEN toIPv6({lo}) AND toIPv6({hi})"
        if dim.kind == "text":
            return f"startsWith({col}, {params.bind(str(f.value), 'String')})"
        raise QueryError(
            f"filter {f.dim}: prefix applies to addresses (CIDR) and text, not numbers", "filters"
        )
    return f"{col} {_SQL_OPS[f.op]} {_bind_dim_value(dim, f.value, params)}"


def _either_side_sql(sides: tuple[Dimension, Dimension], f: Filter, params: Params) -> str:
    """``vm_id IN (..)``: either side is in; ``vm_id NOT IN (..)`` / ``!=``: neither side is."""
    if f.op not in ("eq", "ne", "in", "not_in"):
        raise QueryError(f"filter {f.dim}: either-side ids take =, !=, a list or not in the list", "filters")
    negate = f.op in ("ne", "not_in")
    values = f.value if isinstance(f.value, list) else [f.value]
    parts = []
    for dim in sides:
        bound = ", ".join(_bind_dim_value(dim, v, params) for v in values)
        parts.append(f"{ident(dim.column)} {'NOT IN' if negate else 'IN'} ({bound})")
    return "(" + (" AND " if negate else " OR ").join(parts) + ")"


def _measurefilter_sql(table: StoredTable, f: Filter, params: Params) -> str:
    expr = record_measure(table, f.dim)
    assert expr is not None  # checked by misfit

    def bind(v: Any) -> str:
        if isinstance(v, str):
            try:
                v = float(v) if any(c in v for c in ".eE") else int(v)
            except ValueError:
                raise QueryError(f"filter {f.dim}: {v!r} is not a number", "filters") from None
        if isinstance(v, float):
            return params.bind(v, "Float64")
        return params.bind(v, "UInt64" if v > _INT64_MAX else "Int64")

    if f.op == "prefix":
        raise QueryError(f"filter {f.dim}: prefix applies to addresses and text", "filters")
    if f.op in ("in", "not_in"):
        values = f.value if isinstance(f.value, list) else [f.value]
        return f"{expr} {'NOT IN' if f.op == 'not_in' else 'IN'} ({', '.join(bind(v) for v in values)})"
    return f"{expr} {_SQL_OPS[f.op]} {bind(f.value)}"
