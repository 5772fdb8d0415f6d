"""Which stored table answers a query: the logical table, then the rollup its range and step call for."""

from __future__ import annotations

import re

from cloudtap.server.query.catalog import (
    INTERVALS,
    MAX_RANGE_NS,
    NS_PER_S,
    Dimension,
    StoredTable,
    candidates,
    dimension_names,
    metric_names,
)
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Query
from cloudtap.server.query.timespec import format_duration, parse_duration
from cloudtap.server.store.ddl import ident

#: Preferred rollup by range: up to 6 h -> 1 s, up to 7 d -> 1 min, beyond -> 1 h.
_AUTO_INTERVAL = ((6 * 3600 * NS_PER_S, "1s"), (7 * 86400 * NS_PER_S, "1m"))
#: Percentile aggregations: ``p50``, ``p99.9``...
PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d{1,3})?)")


def misfit(table: StoredTable, query: Query) -> QueryError | None:
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
        if agg not in allowed and not (PERCENTILE.fullmatch(agg) and "pXX" in allowed):
            hint = (
                " (percentiles, min, max and per-record means need table flows or request_log)"
                if table.interval is not None
                else ""
            )
            return QueryError(
                f"metric {spec.name!r} cannot be aggregated with {agg!r}{hint}", "metrics", allowed
            )
    for name in query.group_by:
        if name not in table.dimensions:
            return _unknown_dim(name, table, "group_by")
    for f in query.filters:
        if f.dim not in table.dimensions and record_measure(table, f.dim) is None and either_side(table, f.dim) is None:
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


def either_side(table: StoredTable, name: str) -> tuple[Dimension, Dimension] | None:
    """``vm_id`` on a table with ``client_vm_id`` and ``server_vm_id``: both sides (a filter on either)."""
    if name in table.dimensions or not name.endswith("_id"):
        return None
    a, b = table.dimensions.get(f"client_{name}"), table.dimensions.get(f"server_{name}")
    return (a, b) if a is not None and b is not None else None


def record_measure(table: StoredTable, name: str) -> str | None:
    """On the flow log, a per-record measure filters like a dimension: its SQL value, else None."""
    if table.interval is not None:  # records only (flows, request_log)
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
        for logical in ("edges", "flows", "endpoints", "requests", "request_log"):
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
            first.message.split(" for table ")[0] + " in edges, flows, endpoints, requests or request_log",
            first.field,
            allowed,
        )
    return _choose_in(query.table, query, span_ns, available, whole)


def _choose_in(
    logical: str, query: Query, span_ns: int, available: set[str] | None = None, whole: bool = False
) -> StoredTable:
    tables = candidates(logical)
    if all(t.interval is None for t in tables):
        if query.interval is not None:
            raise QueryError(
                f"interval applies to edges, endpoints and requests; {logical} are records", "interval"
            )
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
        problem = misfit(table, query)
        capped = not (whole and table.interval is None)
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
