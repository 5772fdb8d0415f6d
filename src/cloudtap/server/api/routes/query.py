"""/api/v1/query: the general query (POST) and the top / series / flows shortcuts (GET).

JSON by default; ``Accept: application/vnd.apache.arrow.stream`` returns an Arrow IPC stream (stats
and meta as JSON in the schema metadata). Unknown names and out-of-bounds values answer 422 with the
allowed names.

Filters may name inventory entities (``vm=db-01``, ``client_project=pay*``; the ``project``, ``vm``,
``host`` and ``subnet`` parameters of the shortcuts), resolved as they were during the queried window;
a name that matches nothing answers 422 naming it. Grouping by ``client_vm`` (or ``client_vm_id``...)
shows names. The resolver is ``app.state.names`` (the inventory router builds it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi import Query as Param
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cloudtap.inventory.names import NameResolver
from cloudtap.server.access.permissions import Permission
from cloudtap.server.api.deps import StoreDep, get_names
from cloudtap.server.api.guard import require
from cloudtap.server.api.routes._errors import BAD_JSON, ValidationErrorOut, unprocessable_item
from cloudtap.server.query.catalog import describe
from cloudtap.server.query.engine import ARROW_STREAM, QueryEngine, QueryResult
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import MAX_LIMIT, Query
from cloudtap.server.query.presets import DEFAULT_GROUP, flows_query, series_query, top_query
from cloudtap.server.store.ddl import ident

router = APIRouter(prefix="/api/v1/query", tags=["query"])


class ColumnInfo(BaseModel):
    """One result column."""

    name: str
    type: str
    role: str  #: time | dimension | metric | column
    agg: str | None = None
    unit: str | None = None


class QueryStatsOut(BaseModel):
    """Cost of the query."""

    rows: int
    elapsed_ms: float
    truncated: bool
    rows_read: int | None = None


class QueryAnswer(BaseModel):
    """A query's answer: ``rows`` are lists in ``columns`` order (times as ISO 8601 text)."""

    columns: list[str]
    rows: list[list[Any]]
    column_info: list[ColumnInfo]
    stats: QueryStatsOut
    meta: dict[str, Any]


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": QueryAnswer,
        "content": {ARROW_STREAM: {}},
        "description": "the answer (JSON or Arrow IPC)",
    },
    422: {
        "model": ValidationErrorOut,
        "description": "unknown name (dimension, metric or inventory entity) or bad value; detail names the "
        "field and the allowed names",
    },
}

Since = Annotated[str | None, Param(description="relative range ending now: 15m, 1h, 2d, or 'all'")]
From = Annotated[
    str | None, Param(alias="from", description="range start (ISO 8601 / epoch); wins over since")
]
To = Annotated[str | None, Param(alias="to", description="range end (default now)")]
Filters = Annotated[
    list[str], Param(alias="filter", description="dim=value, dim!=a,b, client_ip~10.0.0.0/8, ...")
]
Table = Annotated[str | None, Param(description="flows | edges | endpoints (default: edges if they suffice)")]
Interval = Annotated[str | None, Param(description="1s | 1m | 1h (edges/endpoints; default by range)")]
Project = Annotated[str | None, Param(description="project name(s) or * glob, either side (a,b for a list)")]
Vm = Annotated[str | None, Param(description="VM name(s) or * glob, either side")]
Host = Annotated[str | None, Param(description="host name(s) or * glob, either side")]
Subnet = Annotated[str | None, Param(description="subnet name(s) or * glob, either side")]


def _unprocessable(exc: QueryError, where: str) -> HTTPException:
    return HTTPException(status_code=422, detail=[unprocessable_item(where, exc.field, exc.message, exc.allowed)])


def _names(request: Request) -> NameResolver | None:
    """The inventory's resolver as the caller may use it (None when the inventory is disabled)."""
    return get_names(request)  # type: ignore[no-any-return]


def _answer(request: Request, store: Any, query: Query, where: str) -> Response:
    try:
        result = QueryEngine(store, names=_names(request)).run(query)
    except QueryError as exc:
        raise _unprocessable(exc, where) from exc
    return _respond(request, result)


def _respond(request: Request, result: QueryResult) -> Response:
    if ARROW_STREAM in request.headers.get("accept", ""):
        return Response(result.to_arrow_ipc(), media_type=ARROW_STREAM)
    return JSONResponse(result.to_json())


def _preset(builder: Any, **kwargs: Any) -> Query:
    try:
        return builder(**kwargs)  # type: ignore[no-any-return]
    except QueryError as exc:
        raise _unprocessable(exc, "query") from exc


@router.post("", dependencies=[Depends(require(Permission.FLOWS_READ))], responses={**_RESPONSES, **BAD_JSON}, response_model=None,
             summary="Run a query")  # fmt: skip
def run_query(query: Query, request: Request, store: StoreDep) -> Response:
    """Filter, group and aggregate flows, edges or endpoints over a time range (see docs/query.md)."""
    return _answer(request, store, query, "body")


@router.get("/top", dependencies=[Depends(require(Permission.FLOWS_READ))], responses=_RESPONSES, response_model=None, summary="Top talkers")
def top(
    request: Request,
    store: StoreDep,
    by: Annotated[
        str, Param(description="metric(s) to rank by, first one orders: bytes, flows, rtt_p95...")
    ] = "bytes",
    group: Annotated[str, Param(description="dimensions, comma separated")] = DEFAULT_GROUP,
    since: Since = "1h",
    time_from: From = None,
    time_to: To = None,
    filters: Filters = [],  # noqa: B006 - FastAPI reads the default, never mutates it
    limit: Annotated[int, Param(ge=1, le=MAX_LIMIT)] = 10,
    table: Table = None,
    interval: Interval = None,
    project: Project = None,
    vm: Vm = None,
    host: Host = None,
    subnet: Subnet = None,
) -> Response:
    """The ``limit`` biggest groups by a metric."""
    names = {"project": project, "vm": vm, "host": host, "subnet": subnet}
    query = _preset(top_query, by=by, group=group, since=since, time_from=time_from, time_to=time_to,
                    filters=filters, limit=limit, table=table, interval=interval, names=names)  # fmt: skip
    return _answer(request, store, query, "query")


@router.get("/series", dependencies=[Depends(require(Permission.FLOWS_READ))], responses=_RESPONSES, response_model=None, summary="Time series")
def series(
    request: Request,
    store: StoreDep,
    metric: Annotated[
        str, Param(description="metric(s), comma separated: bytes, bytes_rate, rtt_mean...")
    ] = "bytes",
    step: Annotated[str, Param(description="bucket width, 1s .. 1d")] = "1m",
    since: Since = "3h",
    time_from: From = None,
    time_to: To = None,
    filters: Filters = [],  # noqa: B006
    group: Annotated[str | None, Param(description="one series per group of these dimensions")] = None,
    top: Annotated[int | None, Param(ge=1, le=1000, description="grouped: keep the biggest groups")] = None,
    table: Table = None,
    interval: Interval = None,
    project: Project = None,
    vm: Vm = None,
    host: Host = None,
    subnet: Subnet = None,
) -> Response:
    """A metric per time bucket (empty buckets of an ungrouped series are filled)."""
    names = {"project": project, "vm": vm, "host": host, "subnet": subnet}
    query = _preset(series_query, metric=metric, step=step, since=since, time_from=time_from, time_to=time_to,
                    filters=filters, group=group, top=top, table=table, interval=interval,
                    names=names)  # fmt: skip
    return _answer(request, store, query, "query")


@router.get("/flows", dependencies=[Depends(require(Permission.FLOWS_READ))], responses=_RESPONSES, response_model=None, summary="Flow records")
def flows(
    request: Request,
    store: StoreDep,
    since: Since = "1h",
    time_from: From = None,
    time_to: To = None,
    filters: Filters = [],  # noqa: B006
    limit: Annotated[int, Param(ge=1, le=MAX_LIMIT)] = 100,
    columns: Annotated[str | None, Param(description="columns to return, comma separated")] = None,
    order: Annotated[
        str | None, Param(description="sort: -bytes_c2s, first asc ... (default newest first)")
    ] = None,
    project: Project = None,
    vm: Vm = None,
    host: Host = None,
    subnet: Subnet = None,
) -> Response:
    """Raw flow records, newest first."""
    names = {"project": project, "vm": vm, "host": host, "subnet": subnet}
    query = _preset(flows_query, since=since, time_from=time_from, time_to=time_to, filters=filters, limit=limit,
                    columns=columns, order=order, names=names)  # fmt: skip
    return _answer(request, store, query, "query")


@router.get("/catalog", dependencies=[Depends(require(Permission.FLOWS_READ))], summary="Dimensions and metrics")
def catalog() -> dict[str, Any]:
    """Every table's dimensions, metrics (unit, allowed aggregations) and stored columns."""
    return describe()


class Extent(BaseModel):
    """The span of stored traffic the caller may see (minute resolution); nulls when there is none."""

    first: str | None
    last: str | None


@router.get("/extent", dependencies=[Depends(require(Permission.FLOWS_READ))], response_model=Extent,
            summary="First and last minute of stored traffic")  # fmt: skip
def extent(store: StoreDep) -> Extent:
    """From the first stored minute to the end of the last (the console's "all stored data")."""
    table = f"{ident(store.database)}.{ident('edge_1m')}"
    answer = store.query_arrow(
        f"SELECT toUnixTimestamp(min(time)) AS first, toUnixTimestamp(max(time)) + 60 AS last, count() AS n FROM {table}"
    ).to_pylist()
    row = answer[0] if answer else {"n": 0}
    if not row.get("n"):
        return Extent(first=None, last=None)
    def text(seconds: int) -> str:
        return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return Extent(first=text(row["first"]), last=text(row["last"]))
