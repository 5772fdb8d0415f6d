"""The convenience queries (top, series, flows, requests) as :class:`Query` objects, from text arguments.

Shared by the ``GET /api/v1/query/{top,series,flows}`` routes and ``cloudtap query``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

from pydantic import ValidationError

from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Filter, MetricSpec, Query, parse_metric_text
from cloudtap.server.query.timespec import ALL

DEFAULT_GROUP = "client_ip,server_ip,server_port"
#: Inventory kinds the shortcuts take as options (``--vm db-01``, ``?vm=db-01``): either side of a flow.
NAME_OPTIONS = ("project", "vm", "host", "subnet")

NameArgs = Mapping[str, str | Sequence[str] | None]


def name_filters(names: NameArgs | None) -> list[Filter]:
    """``{"vm": "db-01", "project": "pay,shop"}`` -> name filters (either side; a list or globs allowed).

    Raises:
        QueryError: a value that is not a name (empty, too long, control characters).
    """
    out = []
    for kind, value in (names or {}).items():
        values = split_names(value)
        if not values:
            continue
        try:
            out.append(Filter(dim=kind, op="in" if len(values) > 1 else "eq",
                              value=values if len(values) > 1 else values[0]))  # fmt: skip
        except ValidationError as exc:
            raise QueryError(f"{kind}: {exc.errors()[0]['msg']}", "filters") from None
    return out


def _filters(texts: Sequence[str], names: NameArgs | None) -> list[Filter]:
    return [Filter.parse(f) for f in texts] + name_filters(names)


def split_names(text: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (blanks dropped)."""
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    return [n.strip() for p in parts for n in p.split(",") if n.strip()]


def time_range(since: str | None, time_from: str | None, time_to: str | None) -> tuple[str, str | None]:
    """(time_from, time_to) of a query: ``from``/``to`` win over ``since`` (``1h`` -> ``-1h``, ``all``)."""
    if time_from is not None:
        return time_from, time_to
    s = (since or "1h").strip()
    if s.lower() == ALL:
        return ALL, time_to
    return ("-" + s.lstrip("-")), time_to


def _metrics(names: Sequence[str]) -> list[MetricSpec]:
    out = []
    for name in names:
        try:
            out.append(MetricSpec(**parse_metric_text(name)))
        except ValidationError as exc:
            raise QueryError(f"metric {name!r}: {exc.errors()[0]['msg']}", "metrics") from None
    return out


def _build(**fields: object) -> Query:
    try:
        return Query(**fields)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "query"
        raise QueryError(f"{where}: {str(err['msg']).removeprefix('Value error, ')}", where) from None


def top_query(
    by: str | Sequence[str] = "bytes",
    group: str | Sequence[str] = DEFAULT_GROUP,
    since: str | None = "1h",
    time_from: str | None = None,
    time_to: str | None = None,
    filters: Sequence[str] = (),
    limit: int = 10,
    table: str | None = None,
    interval: str | None = None,
    names: NameArgs | None = None,
) -> Query:
    """Top ``limit`` groups by the first of ``by`` (further metrics ride along)."""
    metrics = _metrics(split_names(by) or ["bytes"])
    t0, t1 = time_range(since, time_from, time_to)
    return _build(
        table=table, interval=interval, time_from=t0, time_to=t1, filters=_filters(filters, names),
        group_by=split_names(group), metrics=metrics, order_by=[{"name": metrics[0].column, "desc": True}],
        limit=limit,
    )  # fmt: skip


def series_query(
    metric: str | Sequence[str] = "bytes",
    step: str = "1m",
    since: str | None = "3h",
    time_from: str | None = None,
    time_to: str | None = None,
    filters: Sequence[str] = (),
    group: str | Sequence[str] | None = None,
    top: int | None = None,
    table: str | None = None,
    interval: str | None = None,
    names: NameArgs | None = None,
) -> Query:
    """A time series of ``metric`` per ``step`` (per group, for the ``top`` biggest groups)."""
    t0, t1 = time_range(since, time_from, time_to)
    return _build(
        table=table, interval=interval, time_from=t0, time_to=t1, filters=_filters(filters, names),
        group_by=split_names(group), metrics=_metrics(split_names(metric) or ["bytes"]), step=step, top_groups=top,
    )  # fmt: skip


def records_query(
    table: str,
    since: str | None = "1h",
    time_from: str | None = None,
    time_to: str | None = None,
    filters: Sequence[str] = (),
    limit: int = 100,
    columns: str | Sequence[str] | None = None,
    order: str | Sequence[str] | None = None,
    names: NameArgs | None = None,
) -> Query:
    """One row per record of ``table`` (``flows``, ``request_log``), newest first (or by ``order``: ``-bytes_c2s``,
    ``first asc``, ``-latency_us``)."""
    t0, t1 = time_range(since, time_from, time_to)
    return _build(
        table=table, time_from=t0, time_to=t1, filters=_filters(filters, names), limit=limit,
        columns=split_names(columns) or None, order_by=split_names(order),
    )  # fmt: skip


#: Raw flow records, newest first.
flows_query = partial(records_query, "flows")
#: Application request records (``request_log``), newest first.
requests_query = partial(records_query, "request_log")

