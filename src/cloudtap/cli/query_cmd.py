"""`cloudtap query`: top talkers, time series, flow and request records from a server or a local data directory.

``--project``, ``--vm``, ``--host``, ``--subnet`` filter by inventory names (either side; ``a,b`` or ``*`` globs),
and ``--group client_vm,server_vm`` shows names, as they were in the queried window.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cloudtap.cli.errors import CliError
from cloudtap.cli.render import human_bytes, make_console
from cloudtap.cli.server_client import UNREACHABLE_HINT, ServerClient
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Query
from cloudtap.server.query.presets import DEFAULT_GROUP, flows_query, requests_query, series_query, top_query

if TYPE_CHECKING:  # the engine pulls in the store DDL and the meter: imported when a command runs
    from cloudtap.server.query.engine import QueryResult

FORMATS = ("table", "json", "csv")
#: Columns of ``cloudtap query flows`` as a table (all the defaults for json/csv).
FLOW_TABLE_COLUMNS = (
    "first,proto,client_ip,client_port,server_ip,server_port,packets_c2s,packets_s2c,"
    "bytes_c2s,bytes_s2c,rtt_client_us,rtt_server_us,retrans_c2s,retrans_s2c,close_type"
)
#: Columns of ``cloudtap query requests`` as a table.
REQUEST_TABLE_COLUMNS = (
    "req,l7_proto,client_ip,client_port,server_ip,server_port,request_type,resource,status,code,error,latency_us"
)

query_app = typer.Typer(
    help="Query stored traffic: top talkers, time series, flow and request records (server API or a local --data "
    "directory).",
    no_args_is_help=True,
)


# --- where the data is ------------------------------------------------------------------------------


def _locked(data: Path) -> bool:
    """True when another process holds the chDB data directory."""
    try:
        fd = os.open(data / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def open_local_store(data: Path) -> Any:
    """Open the embedded store in ``data`` for reading (no migration).

    Raises:
        CliError: no store there, or a running server holds the directory.
    """
    from cloudtap.server.store.clickhouse import ClickHouseStore

    if not data.is_dir():
        raise CliError(f"no data directory {data}", 2)
    try:
        store = ClickHouseStore(f"chdb://{data.resolve()}")
    except Exception as exc:
        if _locked(data):
            raise CliError(
                f"{data} is in use by another process (a running `cloudtap server`?); chDB lets one process "
                "open a data directory: query that server with --server URL instead"
            ) from exc
        raise CliError(f"cannot open the store in {data}: {str(exc).strip().splitlines()[0]}") from exc
    try:
        version = store.schema_version()
    except Exception:
        version = 0
    if not version:
        store.close()
        raise CliError(f"no cloudtap store in {data} (run `cloudtap import --data {data} FILE` first)", 2)
    return store


def local_names(store: Any, query: Query) -> Any:
    """The inventory kept in ``store`` as a NameResolver when ``query`` uses names (None otherwise, or with no
    inventory stored: name filters are then refused with the reason)."""
    from cloudtap.server.query.names import plan_names

    if not plan_names(query).uses_names:
        return None
    from cloudtap.inventory.names_store import InventoryNames
    from cloudtap.inventory.store import InventoryStore

    try:
        inventory = InventoryStore(store)
    except Exception:  # a store without the inventory tables, and none can be created
        return None
    return InventoryNames(inventory) if inventory.records() else None


def run_local(data: Path, query: Query) -> QueryResult:
    """Answer ``query`` from the embedded store in ``data`` (names from the inventory stored there)."""
    from cloudtap.server.query.engine import QueryEngine

    store = open_local_store(data)
    try:
        return QueryEngine(store, names=local_names(store, query)).run(query)
    finally:
        store.close()


def run_remote(client: ServerClient, query: Query) -> QueryResult:
    """Answer ``query`` through ``POST /api/v1/query`` (Arrow IPC)."""
    from cloudtap.server.query.engine import ARROW_STREAM, QueryResult

    body = json.dumps(query.model_dump(mode="json", exclude_none=True)).encode()
    answer = client.post_raw(
        "/api/v1/query", body, {"Content-Type": "application/json", "Accept": ARROW_STREAM}
    )
    return QueryResult.from_arrow_ipc(answer)


def execute(query: Query, remote: Remote, data: Path | None) -> QueryResult:
    """Run ``query`` on ``data`` (embedded) or the server (``--server``, the last login, or the default)."""
    if remote.server is not None and data is not None:
        raise CliError("give --server URL or --data DIR, not both", 2)
    try:
        if data is not None:
            return run_local(data, query)
        return run_remote(remote.client(hint=f"{UNREACHABLE_HINT} or use --data DIR"), query)
    except QueryError as exc:
        raise CliError(str(exc), 2) from exc


# --- output -----------------------------------------------------------------------------------------


def _cell(value: Any, info: dict[str, Any]) -> str | Text:
    name, unit = info["name"], info.get("unit")
    if value is None:
        return Text("-", style="dim")
    if str(info["type"]).startswith(("timestamp", "time of day")) and isinstance(value, str):
        text = value.replace("T", " ").removesuffix("Z")
        return text[: 12 if info["type"] == "time of day" else 23]  # milliseconds at most
    if name == "proto" and isinstance(value, int):
        from cloudtap.server.query.catalog import PROTO_NAMES

        return next((k for k, v in PROTO_NAMES.items() if v == value), str(value))
    if isinstance(value, int | float) and (
        unit in ("bytes", "bytes/s") or (unit is None and "bytes" in name)
    ):
        return human_bytes(float(value)) + ("/s" if unit == "bytes/s" else "")
    if isinstance(value, int | float) and value < 0 and name.startswith(("rtt", "latency")):
        return Text("-", style="dim")  # no handshake RTT / no response
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not name.endswith(("port", "_id", "vlan", "seq")):
        return f"{value:,}"
    return str(value)


def _text(value: str | Text) -> Text:
    return value if isinstance(value, Text) else Text(value)


def _short_time(text: str) -> str:
    return text.replace("T", " ").removesuffix("Z")[:19]


def _merge_endpoints(
    columns: list[dict[str, Any]], rows: list[list[Any]]
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """``client_ip`` + ``client_port`` (and server) -> one ``client`` column showing ``ip:port``."""
    names = [c["name"] for c in columns]
    for side in ("client", "server"):
        if f"{side}_ip" in names and f"{side}_port" in names:
            i, j = names.index(f"{side}_ip"), names.index(f"{side}_port")
            for row in rows:
                ip, port = row[i], row[j]
                row[i] = f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"
            columns[i] = {**columns[i], "name": side, "type": "string"}
            del columns[j], names[j]
            for row in rows:
                del row[j]
    return columns, rows


_PAIRS = (("packets_c2s", "packets_s2c", "pkts c→s/s→c"), ("bytes_c2s", "bytes_s2c", "bytes c→s/s→c"),
          ("retrans_c2s", "retrans_s2c", "retrans"), ("rtt_client_us", "rtt_server_us", "rtt µs c/s"))  # fmt: skip


def _merge_directions(
    columns: list[dict[str, Any]], rows: list[list[Any]]
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Per-direction pairs of a record listing -> one ``a / b`` column each (narrower tables)."""
    for a, b, label in _PAIRS:
        names = [c["name"] for c in columns]
        if a not in names or b not in names:
            continue
        i, j = names.index(a), names.index(b)
        for row in rows:
            row[i] = f"{_cell(row[i], columns[i])}/{_cell(row[j], columns[j])}"
            del row[j]
        columns[i] = {**columns[i], "name": label, "type": "pair", "unit": None}
        del columns[j]
    return columns, rows


def render_table(result: QueryResult, title: str) -> Table:
    """A Rich table of the answer, with the range and cost as caption."""
    answer = result.to_json()
    meta, stats = result.meta, result.stats
    columns, rows = answer["column_info"], answer["rows"]
    if not any(c["role"] == "metric" for c in columns):
        columns, rows = _merge_endpoints(columns, rows)
        columns, rows = _merge_directions(columns, rows)
    t0, t1 = _short_time(meta.get("time_from", "?")), _short_time(meta.get("time_to", "?"))
    if t0[:10] == t1[:10]:  # one day: the caption carries the date, cells only the time of day
        for k, info in enumerate(columns):
            if info["type"].startswith("timestamp"):
                for row in rows:
                    row[k] = row[k][11:] if isinstance(row[k], str) else row[k]
                columns[k] = {**info, "type": "time of day"}
    span = f"{t0} → {t1} UTC"
    caption = f"{span} · {meta.get('stored_table', '')} · {stats.rows} rows in {stats.elapsed_ms:.0f} ms"
    if stats.truncated:
        caption += " · more rows matched (raise --limit)"
    table = Table(title=title, caption=caption, header_style="bold cyan", row_styles=["", "dim"])
    quiet_units = ("bytes", "packets", "flows", "segments", "records", None)
    for info in columns:
        numeric = info["role"] == "metric" or info["type"].startswith(("uint", "int", "double", "float"))
        unit = info.get("unit")
        header = info["name"] + ("" if unit in quiet_units or unit in info["name"] else f" ({unit})")
        wide = (
            info["type"].startswith(("timestamp", "time of day"))
            or info["name"] in ("client", "server")
            or info["type"] == "pair"
        )
        right = (numeric and info["name"] != "proto") or info["type"] == "pair"
        table.add_column(
            header, justify="right" if right else "left", no_wrap=wide, min_width=min(len(header), 8)
        )
    for row in rows:
        table.add_row(*(_text(_cell(v, c)) for v, c in zip(row, columns, strict=True)))
    return table


def emit(result: QueryResult, fmt: str, title: str, console: Console | None = None) -> None:
    """Print the answer as a table, JSON (the API's shape) or CSV."""
    if fmt == "json":
        sys.stdout.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")
    elif fmt == "csv":
        answer = result.to_json()
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(answer["columns"])
        writer.writerows(answer["rows"])
    else:
        (console or make_console()).print(render_table(result, title))


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
