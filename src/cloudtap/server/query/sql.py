"""Query -> one ClickHouse SELECT with bound parameters.

The table is chosen by ``table_choice``, the WHERE clauses come from ``where_sql``; this module writes
the SELECT: time buckets, groups (top-N), aggregations, order, raw record listings, tier unions.

Only catalog text (column names and formulas looked up by name), integers and floats computed here
enter the SQL text; every user value is a ``{pN:Type}`` parameter. Output columns get internal aliases
(``_t``, ``_d0``, ``_m0``...) so they never shadow stored columns; the engine renames them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudtap.server.query.catalog import NS_PER_S, StoredTable
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.metric import Metric
from cloudtap.server.query.model import MetricSpec, Query
from cloudtap.server.query.table_choice import PERCENTILE, choose_table, either_side
from cloudtap.server.query.timespec import parse_duration
from cloudtap.server.query.where_sql import Params, filter_sql, time_where
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

__all__ = [
    "DEFAULT_TOP_GROUPS",
    "MAX_POINTS",
    "MAX_STEP_NS",
    "MIN_STEP_NS",
    "CompiledQuery",
    "OutputColumn",
    "Params",
    "choose_table",
    "compile_query",
]


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


def _agg_sql(table: StoredTable, spec: MetricSpec, bucket_s: float) -> tuple[str, str | None, str]:
    """(SQL, unit, agg) of one metric."""
    if spec.agg == "uniq":
        dim = table.dimensions[spec.name]
        return f"uniq({ident(dim.column)})", None, "uniq"
    metric: Metric = table.metrics[spec.name]
    agg = spec.agg or metric.default_agg
    if metric.by_agg:  # misfit refused any aggregation it lacks
        return dict(metric.by_agg)[agg], metric.unit, agg
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
    m = PERCENTILE.fullmatch(agg)
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
        where = [time_where(table, time_from_ns, time_to_ns, params)]
        where += [filter_sql(table, f, params) for f in query.filters]
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
        sides = either_side(table, f.dim)
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
        ranges = [time_where(t, p.time_from_ns, p.time_to_ns, params) for p in parts]
        cond = ranges[0] if len(ranges) == 1 else "(" + " OR ".join(f"({r})" for r in ranges) + ")"
        conds = [cond] + [filter_sql(t, f, params) for f in query.filters]
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
