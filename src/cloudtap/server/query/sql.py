"""Query -> one ClickHouse SELECT with bound parameters.

Only catalog text (column names and formulas looked up by name), integers and floats computed here
enter the SQL text; every user value is a ``{pN:Type}`` parameter. Output columns get internal aliases
(``_t``, ``_d0``, ``_m0``...) so they never shadow stored columns; the engine renames them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudtap.server.query.catalog import (
    INTERVALS,
    MAX_RANGE_NS,
    NS_PER_S,
    PROTO_NAMES,
    Dimension,
    Metric,
    StoredTable,
    candidates,
    dimension_names,
    metric_names,
)
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Filter, MetricSpec, Query
from cloudtap.server.query.timespec import format_duration, parse_duration
from cloudtap.server.store.ddl import ident

if TYPE_CHECKING:
    from cloudtap.server.query.tiers import Segment

#: Most time buckets one series may have.
MAX_POINTS = 10_000
#: Groups kept by a grouped series when ``top_groups`` is not given.
DEFAULT_TOP_GROUPS = 10
#: Smallest and largest step of a series.
MIN_STEP_NS = NS_PER_S
MAX_STEP_NS = 86400 * NS_PER_S
#: Preferred rollup by range: up to 6 h -> 1 s, up to 7 d -> 1 min, beyond -> 1 h.
_AUTO_INTERVAL = ((6 * 3600 * NS_PER_S, "1s"), (7 * 86400 * NS_PER_S, "1m"))
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
_SQL_OPS = {"eq": "=", "ne": "!=", "gt": ">", "lt": "<", "ge": ">=", "le": "<="}
_PCT = re.compile(r"p(\d{1,2}(?:\.\d{1,3})?)")


@dataclass
class OutputColumn:
    """One column of the result."""

    name: str  #: public name
    alias: str  #: name in the SQL
    role: str  #: time | dimension | metric | column
    agg: str | None = None
    unit: str | None = None


@dataclass
class CompiledQuery:
    """A query ready for :meth:`FlowStore.query_arrow`."""

    sql: str
    parameters: dict[str, Any]
    columns: list[OutputColumn]
    table: StoredTable
    time_from_ns: int
    time_to_ns: int
    step_ns: int | None
    limit: int
    fill: bool = False  #: ungrouped series: the engine adds empty buckets
    segments: list[Segment] | None = None  #: parts of the range read from other rollups (None: ``table`` only)


class Params:
    """Collects bound parameters; returns their ``{name:Type}`` placeholders."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def bind(self, value: Any, ch_type: str) -> str:
        """Placeholder for ``value`` as ClickHouse ``ch_type``."""
        name = f"p{len(self.values)}"
        self.values[name] = value
        return "{" + name + ":" + ch_type + "}"


# --- choosing the stored table --------------------------------------------------------------------


def _misfit(table: StoredTable, query: Query) -> QueryError | None:
    """Why ``table`` cannot answer ``query`` (None when it can)."""
    logical = table.logical
    for spec in query.metrics:
        if spec.agg == "uniq":
            if spec.name not in table.dimensions:
                return _unknown_dim(spec.name, table, "metrics")
            continue
        metric = table.metrics.get(spec.name)
        if metric is None:
            if spec.name in metric_names(logical):
                return QueryError(f"metric {spec.name!r} is not kept at interval {table.interval}", "metrics")
            return QueryError(
                f"unknown metric {spec.name!r} for table {logical}", "metrics", metric_names(logical)
            )
        agg = spec.agg or metric.default_agg
        allowed = metric.aggs
        if agg not in allowed and not (_PCT.fullmatch(agg) and "pXX" in allowed):
            hint = (
                " (percentiles, min, max and per-record means need table flows)" if logical != "flows" else ""
            )
            return QueryError(
                f"metric {spec.name!r} cannot be aggregated with {agg!r}{hint}", "metrics", allowed
            )
    for name in query.group_by:
        if name not in table.dimensions:
            return _unknown_dim(name, table, "group_by")
    for f in query.filters:
        if f.dim not in table.dimensions and _record_measure(table, f.dim) is None and _either_side(table, f.dim) is None:
            return _unknown_dim(f.dim, table, "filters")
    for name in query.columns or ():
        if name not in table.columns:
            return QueryError(f"unknown column {name!r} for table {logical}", "columns", table.columns)
    return None


def _unknown_dim(name: str, table: StoredTable, field_name: str) -> QueryError:
    logical = table.logical
    if name in dimension_names(logical):
        return QueryError(f"dimension {name!r} is not kept at interval {table.interval}", field_name)
    return QueryError(f"unknown dimension {name!r} for table {logical}", field_name, dimension_names(logical))


def _either_side(table: StoredTable, name: str) -> tuple[Dimension, Dimension] | None:
    """``vm_id`` on a table with ``client_vm_id`` and ``server_vm_id``: both sides (a filter on either)."""
    if name in table.dimensions or not name.endswith("_id"):
        return None
    a, b = table.dimensions.get(f"client_{name}"), table.dimensions.get(f"server_{name}")
    return (a, b) if a is not None and b is not None else None


def _record_measure(table: StoredTable, name: str) -> str | None:
    """On the flow log, a per-record measure filters like a dimension: its SQL value, else None."""
    if table.logical != "flows":
        return None
    metric = table.metrics.get(name)
    if metric is not None and metric.value is not None and metric.cond is None:
        return metric.value
    if name in table.columns and name not in table.dimensions and re.fullmatch(r"\w+", name):
        base = table.columns[name]
        if base.startswith(("UInt", "Int", "Float")):
            return ident(name)
    return None


def choose_table(
    query: Query, span_ns: int, available: set[str] | None = None, whole: bool = False
) -> StoredTable:
    """The stored table that answers ``query`` over ``span_ns``.

    Args:
        query: the query.
        span_ns: width of its time range.
        available: stored tables known to hold rows; preferred when the interval is automatic.
        whole: the range is "all stored data": flow records are then listed however long the data spans
            (the cap guards against asking for too much; here the user asked for exactly what is stored).

    Raises:
        QueryError: no table has every name used, or the range is too wide for all that do.
    """
    if query.table is None:
        errors = []
        for logical in ("edges", "flows", "endpoints"):
            try:
                return _choose_in(logical, query, span_ns, available, whole)
            except QueryError as exc:
                errors.append(exc)
        specific = [e for e in errors if e.allowed is None]
        if specific:
            raise specific[0]
        first = errors[0]
        allowed = set().union(*(e.allowed or () for e in errors if e.field == first.field))
        raise QueryError(
            first.message.split(" for table ")[0] + " in edges, flows or endpoints", first.field, allowed
        )
    return _choose_in(query.table, query, span_ns, available, whole)


def _choose_in(
    logical: str, query: Query, span_ns: int, available: set[str] | None = None, whole: bool = False
) -> StoredTable:
    tables = candidates(logical)
    if logical == "flows":
        if query.interval is not None:
            raise QueryError("interval applies to edges and endpoints; flows are records", "interval")
        ordered = tables
    elif query.interval is not None:
        ordered = [t for t in tables if t.interval == query.interval]
    else:
        ordered = _preference(tables, query, span_ns)
        if (
            available is not None
        ):  # a rollup with rows beats an empty one (e.g. agents shipping 60 s edges only)
            ordered = [t for t in ordered if t.name in available] + [
                t for t in ordered if t.name not in available
            ]
    first_error: QueryError | None = None
    for table in ordered:
        problem = _misfit(table, query)
        capped = not (whole and table.logical == "flows")
        if problem is None and capped and span_ns > MAX_RANGE_NS[table.name]:
            problem = QueryError(
                f"time range {format_duration(span_ns)} is wider than {format_duration(MAX_RANGE_NS[table.name])}, "
                f"the most {table.name} answers; narrow time_from/time_to"
                + (" or use a coarser interval" if table.interval and table.interval != "1h" else ""),
                "time_from",
            )
        if problem is None and query.step:
            step_ns = parse_duration(query.step, "step")
            if table.width_ns and step_ns % table.width_ns:
                problem = QueryError(
                    f"step {query.step} is not a multiple of the {table.interval} interval", "step"
                )
        if problem is None:
            return table
        first_error = first_error or problem
    assert first_error is not None
    raise first_error


def _preference(tables: list[StoredTable], query: Query, span_ns: int) -> list[StoredTable]:
    """Rollups to try, best first: the one the range calls for (no coarser than the step allows), then finer,
    then coarser. The engine then reads whole coarser intervals from coarser rollups (``tiers``)."""
    by_interval = {t.interval: t for t in tables}
    order = list(INTERVALS)
    want = next((i for limit, i in _AUTO_INTERVAL if span_ns <= limit), "1h")
    if query.step:
        step_ns = parse_duration(query.step, "step")
        by_step = max((i for i in order if step_ns % INTERVALS[i] == 0), key=INTERVALS.__getitem__, default="1s")
        want = min(want, by_step, key=INTERVALS.__getitem__)
    start = order.index(want)
    ranked = [want] + order[:start][::-1] + order[start + 1 :]
    return [by_interval[i] for i in ranked if i in by_interval]


# --- SQL ------------------------------------------------------------------------------------------


def _time_where(table: StoredTable, t0: int, t1: int, params: Params) -> str:
    col = ident(table.time_column)
    if table.logical == "flows":
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


def _filter_sql(table: StoredTable, f: Filter, params: Params) -> str:
    dim = table.dimensions.get(f.dim)
    if dim is None:
        sides = _either_side(table, f.dim)
        if sides is not None:
            return _either_side_sql(sides, f, params)
        return _measure_filter_sql(table, f, params)
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


def _measure_filter_sql(table: StoredTable, f: Filter, params: Params) -> str:
    expr = _record_measure(table, f.dim)
    assert expr is not None  # checked by _misfit

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


def _agg_sql(table: StoredTable, spec: MetricSpec, bucket_s: float) -> tuple[str, str | None, str]:
    """(SQL, unit, agg) of one metric."""
    if spec.agg == "uniq":
        dim = table.dimensions[spec.name]
        return f"uniq({ident(dim.column)})", None, "uniq"
    metric: Metric = table.metrics[spec.name]
    agg = spec.agg or metric.default_agg
    v, c = metric.value, metric.cond
    if agg in ("sum", "rate"):
        if metric.count is not None:
            total = metric.count
        elif c is not None:
            total = f"sumIf({v}, {c})"
        else:
            total = f"sum({v})"
        if agg == "sum":
            return total, metric.unit, agg
        return f"({total}) / {bucket_s!r}", f"{metric.unit}/s", agg
    if agg == "mean":
        if metric.ratio is not None:
            num, den = metric.ratio
            return f"sum({num}) / nullIf(sum({den}), 0)", metric.unit, agg
        if c is not None:
            return f"sumIf({v}, {c}) / nullIf(countIf({c}), 0)", metric.unit, agg
        return f"sum({v}) / nullIf(count(), 0)", metric.unit, agg
    cond = c if c is not None else "1"
    if agg in ("min", "max"):
        return f"{agg}IfOrNull({v}, {cond})", metric.unit, agg
    m = _PCT.fullmatch(agg)
    assert m is not None
    level = round(float(m.group(1)) / 100.0, 6)
    return f"quantileTDigestIf({level!r})({v}, {cond})", metric.unit, agg


def _raw_column_sql(table: StoredTable, name: str) -> str:
    dim = table.dimensions.get(name)
    if dim is not None:
        return dim.output
    ch_type = table.columns[name]
    if ch_type.startswith("DateTime(") or "(max, DateTime(" in ch_type:
        return f"toDateTime64({ident(name)}, 0, 'UTC')"
    return ident(name)


def compile_query(
    query: Query,
    time_from_ns: int,
    time_to_ns: int,
    database: str = "cloudtap",
    table: StoredTable | None = None,
    segments: Sequence[Segment] | None = None,
) -> CompiledQuery:
    """Build the SELECT answering ``query`` over ``[time_from_ns, time_to_ns)``.

    Args:
        query: the validated query.
        time_from_ns, time_to_ns: the resolved range (ns since the epoch).
        database: ClickHouse database of the store.
        table: the stored table (chosen by :func:`choose_table` when None).
        segments: parts of the range to read from other rollups of the same logical table
            (:func:`cloudtap.server.query.tiers.plan_segments`); None reads ``table`` only.

    Raises:
        QueryError: unknown names, disallowed aggregations, bad filter values, too wide ranges.
    """
    if time_to_ns <= time_from_ns:
        raise QueryError("time_to must be after time_from", "time_to")
    span = time_to_ns - time_from_ns
    table = table or choose_table(query, span)
    params = Params()
    source = f"{ident(database)}.{ident(table.name)}"
    limit = query.row_limit
    if query.is_raw or not segments or [(s.table.name, s.time_from_ns, s.time_to_ns) for s in segments] == [
        (table.name, time_from_ns, time_to_ns)
    ]:
        segments = None
        where = [_time_where(table, time_from_ns, time_to_ns, params)]
        where += [_filter_sql(table, f, params) for f in query.filters]
    else:
        source = _union_source(query, table, segments, database, params)
        where = []
    if query.is_raw:
        return _compile_raw(query, table, source, where, params, time_from_ns, time_to_ns)

    step_ns: int | None = None
    if query.step:
        step_ns = parse_duration(query.step, "step")
        if step_ns < MIN_STEP_NS or step_ns > MAX_STEP_NS or step_ns % NS_PER_S:
            raise QueryError(f"step {query.step} must be whole seconds between 1s and 1d", "step")
        if table.width_ns and step_ns % table.width_ns:
            raise QueryError(f"step {query.step} is not a multiple of the {table.interval} interval", "step")
        buckets = -(-span // step_ns)
        if buckets > MAX_POINTS:
            raise QueryError(
                f"{buckets} buckets of {query.step}: at most {MAX_POINTS}; use a larger step", "step"
            )
    bucket_s = (step_ns if step_ns else span) / NS_PER_S
    specs = list(query.metrics) or [MetricSpec(name="bytes", agg=None)]
    columns: list[OutputColumn] = []
    select: list[str] = []
    group: list[str] = []
    if step_ns:
        step_s = step_ns // NS_PER_S
        tcol = ident(table.time_column)
        bucket = f"intDiv(toInt64(toUnixTimestamp({tcol})), {step_s}) * {step_s}"
        select.append(f"toDateTime64(toDateTime({bucket}, 'UTC'), 0, 'UTC') AS _t")
        group.append("_t")
        columns.append(OutputColumn("time", "_t", "time"))
    dim_keys = []
    for i, name in enumerate(query.group_by):
        dim = table.dimensions[name]
        select.append(f"{dim.output} AS _d{i}")
        group.append(ident(dim.column))
        dim_keys.append(ident(dim.column))
        columns.append(OutputColumn(name, f"_d{i}", "dimension"))
    metric_sql = []
    for i, spec in enumerate(specs):
        expr, unit, agg = _agg_sql(table, spec, bucket_s)
        metric_sql.append(expr)
        select.append(f"{expr} AS _m{i}")
        columns.append(OutputColumn(spec.column, f"_m{i}", "metric", agg, unit))
    if step_ns and dim_keys:
        k = query.top_groups or DEFAULT_TOP_GROUPS
        keys = ", ".join(dim_keys)
        sub_where = " AND ".join(where) or "1"
        where.append(
            f"({keys}) IN (SELECT {keys} FROM {source} WHERE {sub_where} "
            f"GROUP BY {keys} ORDER BY {metric_sql[0]} DESC LIMIT {int(k)})"
        )
    order = _order_sql(query, columns, default_time=bool(step_ns))
    sql = f"SELECT {', '.join(select)}\nFROM {source}"
    if where:
        sql += f"\nWHERE {' AND '.join(where)}"
    if group:
        sql += f"\nGROUP BY {', '.join(group)}"
    if order:
        sql += f"\nORDER BY {order}"
    sql += f"\nLIMIT {int(limit) + 1}"
    return CompiledQuery(sql, params.values, columns, table, time_from_ns, time_to_ns, step_ns, limit,
                         fill=bool(step_ns) and not query.group_by,
                         segments=list(segments) if segments else None)  # fmt: skip


def _union_source(
    query: Query, table: StoredTable, segments: Sequence[Segment], database: str, params: Params
) -> str:
    """``(SELECT cols FROM t1 WHERE range AND filters UNION ALL ...)``: one branch per stored table."""
    needed: list[str] = [table.time_column]
    for name in query.group_by:
        needed.append(table.dimensions[name].column)
    for f in query.filters:
        sides = _either_side(table, f.dim)
        needed += [d.column for d in sides] if sides else [table.dimensions[f.dim].column]
    for spec in query.metrics or [MetricSpec(name="bytes", agg=None)]:
        if spec.agg == "uniq":
            needed.append(table.dimensions[spec.name].column)
        else:
            needed += table.metrics[spec.name].columns
    cols = ", ".join(ident(c) for c in dict.fromkeys(needed))
    by_table: dict[str, list[Segment]] = {}
    for seg in segments:
        by_table.setdefault(seg.table.name, []).append(seg)
    branches = []
    for parts in by_table.values():
        t = parts[0].table
        ranges = [_time_where(t, p.time_from_ns, p.time_to_ns, params) for p in parts]
        cond = ranges[0] if len(ranges) == 1 else "(" + " OR ".join(f"({r})" for r in ranges) + ")"
        conds = [cond] + [_filter_sql(t, f, params) for f in query.filters]
        branches.append(f"SELECT {cols} FROM {ident(database)}.{ident(t.name)} WHERE {' AND '.join(conds)}")
    return "(\n  " + "\n  UNION ALL\n  ".join(branches) + "\n) AS _tiers"


def _order_sql(query: Query, columns: list[OutputColumn], default_time: bool) -> str:
    by_name = {c.name: c for c in columns}
    parts = []
    for o in query.order_by:
        col = by_name.get(o.name)
        if col is None:
            raise QueryError(f"order_by {o.name!r} is not an output column", "order_by", by_name)
        parts.append(f"{col.alias} {'DESC' if o.desc else 'ASC'}")
    if not parts:
        if default_time:
            parts = ["_t ASC"] + [f"{c.alias} ASC" for c in columns if c.role == "dimension"]
        else:
            metric = next((c for c in columns if c.role == "metric"), None)
            if metric is not None:
                parts = [f"{metric.alias} DESC"]
    # ties broken by the dimensions, so equal metrics come out in a stable order
    named = {p.split(" ")[0] for p in parts}
    parts += [f"{c.alias} ASC" for c in columns if c.role == "dimension" and c.alias not in named]
    return ", ".join(parts)


def _compile_raw(
    query: Query, table: StoredTable, source: str, where: list[str], params: Params, t0: int, t1: int
) -> CompiledQuery:
    names = list(query.columns) if query.columns else list(table.raw_default)
    columns = [OutputColumn(n, f"_c{i}", "column") for i, n in enumerate(names)]
    select = ", ".join(f"{_raw_column_sql(table, n)} AS _c{i}" for i, n in enumerate(names))
    by_name = {c.name: c for c in columns}
    order = []
    for o in query.order_by:
        if o.name not in by_name:
            raise QueryError(f"order_by {o.name!r} is not an output column", "order_by", by_name)
        order.append(f"{by_name[o.name].alias} {'DESC' if o.desc else 'ASC'}")
    if not order:
        order = [f"{ident(table.time_column)} DESC"]
    final = " FINAL" if table.aggregating else ""
    sql = (
        f"SELECT {select}\nFROM {source}{final}\nWHERE {' AND '.join(where)}\n"
        f"ORDER BY {', '.join(order)}\nLIMIT {int(query.row_limit) + 1}"
    )
    return CompiledQuery(sql, params.values, columns, table, t0, t1, None, query.row_limit)
