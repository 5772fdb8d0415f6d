"""`cloudtap query`: top talkers, time series, flow and request records from a server or a local data directory.

``--project``, ``--vm``, ``--host``, ``--subnet`` filter by inventory names (either side; ``a,b`` or ``*`` globs),
and ``--group client_vm,server_vm`` shows names, as they were in the queried window.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cloudtap.cli.errors import CliError
from cloudtap.cli.query_source import execute
from cloudtap.cli.query_view import FORMATS, emit
from cloudtap.cli.render import make_console
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Query
from cloudtap.server.query.presets import DEFAULT_GROUP, flows_query, requests_query, series_query, top_query

#: Columns of ``cloudtap query flows`` as a table (all the defaults for json/csv).
FLOW_TABLE_COLUMNS = (
    "first,proto,client_ip,client_port,server_ip,server_port,packets_c2s,packets_s2c,"
    "bytes_c2s,bytes_s2c,rtt_client_us,rtt_server_us,retrans_c2s,retrans_s2c,close_type"
)
#: Columns of ``cloudtap query requests`` as a table.
REQUEST_TABLE_COLUMNS = "req,l7_proto,client_ip,client_port,server_ip,server_port,request_type,resource,status,code,error,latency_us"

query_app = typer.Typer(
    help="Query stored traffic: top talkers, time series, flow and request records (server API or a local --data "
    "directory).",
    no_args_is_help=True,
)


# --- commands ---------------------------------------------------------------------------------------

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="embedded chDB data directory, read directly (no server on it)")
]
SinceOpt = Annotated[
    str, typer.Option("--since", help="range ending now: 15m, 1h, 2d; 'all' = everything stored")
]
FromOpt = Annotated[
    str | None, typer.Option("--from", help="range start (ISO 8601 or epoch); wins over --since")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="range end (default now, or the last stored row)")]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option("--filter", "-f", "--where", help="dim=value, dim!=a,b, client_ip~10.0.0.0/8 (repeatable)"),
]
FormatOpt = Annotated[str, typer.Option("--format", help="table | json | csv")]
TableOpt = Annotated[
    str | None,
    typer.Option(
        "--table",
        help="flows | edges | endpoints | requests | request_log (default: the first that has the names)",
    ),
]
IntervalOpt = Annotated[
    str | None, typer.Option("--interval", help="edges/endpoints/requests rollup: 1s | 1m | 1h")
]
ProjectOpt = Annotated[
    str | None, typer.Option("--project", help="project name(s), either side: payments, 'pay*', a,b")
]
VmOpt = Annotated[str | None, typer.Option("--vm", help="VM name(s), either side: db-01, 'web-*'")]
HostOpt = Annotated[str | None, typer.Option("--host", help="host name(s), either side")]
SubnetOpt = Annotated[str | None, typer.Option("--subnet", help="subnet name(s), either side")]


def _run(build: Any, fmt: str, remote: Remote, data: Path | None, title: str) -> None:
    err = Console(stderr=True, soft_wrap=True)
    if fmt not in FORMATS:
        err.print(f"[red]error:[/] unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    try:
        query = build()
        result = execute(query, remote, data)
    except QueryError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    except CliError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(exc.code) from exc
    emit(result, fmt, title)


@query_app.command("top")
def top_command(
    by: Annotated[
        str, typer.Option(help="metric(s) to rank by, the first orders: bytes, flows, rtt_p95...")
    ] = "bytes",
    group: Annotated[str, typer.Option(help="dimensions, comma separated")] = DEFAULT_GROUP,
    since: SinceOpt = "1h",
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    filters: FilterOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 10,
    table: TableOpt = None,
    interval: IntervalOpt = None,
    project: ProjectOpt = None,
    vm: VmOpt = None,
    host: HostOpt = None,
    subnet: SubnetOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    data: DataOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Top talkers: the biggest groups (default client -> server:port) by a metric."""
    names = {"project": project, "vm": vm, "host": host, "subnet": subnet}
    _run(lambda: top_query(by, group, since, time_from, time_to, filters or [], limit, table, interval, names),
         fmt, Remote(server, token, ca), data, f"top {group} by {by}")  # fmt: skip


@query_app.command("series")
def series_command(
    metric: Annotated[
        str, typer.Option(help="metric(s): bytes, bytes_rate, packets, rtt, flows...")
    ] = "bytes",
    step: Annotated[str, typer.Option(help="bucket width, 1s .. 1d")] = "1m",
    since: SinceOpt = "3h",
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    filters: FilterOpt = None,
    group: Annotated[str | None, typer.Option(help="one series per group of these dimensions")] = None,
    top: Annotated[int | None, typer.Option(min=1, max=1000, help="grouped: the biggest groups kept")] = None,
    table: TableOpt = None,
    interval: IntervalOpt = None,
    project: ProjectOpt = None,
    vm: VmOpt = None,
    host: HostOpt = None,
    subnet: SubnetOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    data: DataOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """A metric per time bucket."""
    names = {"project": project, "vm": vm, "host": host, "subnet": subnet}
    _run(lambda: series_query(metric, step, since, time_from, time_to, filters or [], group, top, table, interval,
                              names),
         fmt, Remote(server, token, ca), data, f"{metric} per {step}")  # fmt: skip


@query_app.command("flows")
def flows_command(
    since: SinceOpt = "1h",
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    filters: FilterOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 20,
    columns: Annotated[
        str | None, typer.Option(help="columns, comma separated (see `cloudtap query catalog`)")
    ] = None,
    order: Annotated[str | None, typer.Option(help="sort, e.g. -bytes_c2s (default newest first)")] = None,
    project: ProjectOpt = None,
    vm: VmOpt = None,
    host: HostOpt = None,
    subnet: SubnetOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    data: DataOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Flow records, newest first."""
    if columns is None and fmt == "table":
        columns = FLOW_TABLE_COLUMNS
    names = {"project": project, "vm": vm, "host": host, "subnet": subnet}
    _run(lambda: flows_query(since, time_from, time_to, filters or [], limit, columns, order, names),
         fmt, Remote(server, token, ca), data, "flow records")  # fmt: skip


@query_app.command("requests")
def requests_command(
    since: SinceOpt = "1h",
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    filters: FilterOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 20,
    columns: Annotated[
        str | None, typer.Option(help="columns, comma separated (see `cloudtap query catalog request_log`)")
    ] = None,
    order: Annotated[str | None, typer.Option(help="sort, e.g. -latency_us (default newest first)")] = None,
    project: ProjectOpt = None,
    vm: VmOpt = None,
    host: HostOpt = None,
    subnet: SubnetOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    data: DataOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Application request records (HTTP, DNS, MySQL, PostgreSQL, Redis), newest first."""
    if columns is None and fmt == "table":
        columns = REQUEST_TABLE_COLUMNS
    names = {"project": project, "vm": vm, "host": host, "subnet": subnet}
    _run(lambda: requests_query(since, time_from, time_to, filters or [], limit, columns, order, names),
         fmt, Remote(server, token, ca), data, "request records")  # fmt: skip


@query_app.command("run")
def run_command(
    body: Annotated[str, typer.Argument(help="query JSON (as POST /api/v1/query), @FILE, or - for stdin")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    data: DataOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Run a general query given as JSON."""

    def build() -> Query:
        text = (
            sys.stdin.read() if body == "-" else Path(body[1:]).read_text() if body.startswith("@") else body
        )
        try:
            return Query.model_validate_json(text)
        except ValueError as exc:
            raise QueryError(f"not a valid query: {str(exc).splitlines()[-1].strip()}", "query") from None

    _run(build, fmt, Remote(server, token, ca), data, "query")


@query_app.command("catalog")
def catalog_command(
    table: Annotated[
        str | None, typer.Argument(help="flows | edges | endpoints | requests | request_log (default all)")
    ] = None,
) -> None:
    """List the dimensions and metrics each table can be queried by."""
    from cloudtap.server.query.catalog import describe

    console = make_console()
    catalog = describe()
    for name, spec in catalog.items():
        if table and name != table:
            continue
        assert isinstance(spec, dict)
        out = Table(title=f"{name}" + (f" (intervals {', '.join(spec['intervals'])})" if spec["intervals"] else ""),
                    header_style="bold cyan")  # fmt: skip
        out.add_column("metric")
        out.add_column("unit")
        out.add_column("aggregations")
        out.add_column("meaning")
        for m, info in sorted(spec["metrics"].items()):
            out.add_row(m, info["unit"], ", ".join(info["aggs"]), info["doc"])
        console.print(out)
        console.print("[bold]dimensions:[/] " + ", ".join(sorted(spec["dimensions"])), highlight=False)
