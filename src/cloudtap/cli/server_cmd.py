"""`cloudtap server` and `cloudtap import`: run the server; store existing captures."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudtap.errors import CloudtapError

server_app = typer.Typer(
    help="The server: ingest, storage (embedded chDB or ClickHouse) and the API.", no_args_is_help=True
)


def open_store(dsn: str, database: str = "cloudtap", cluster: str | None = None, **kwargs: Any) -> Any:
    """Open (and migrate) the ClickHouse store behind ``dsn``; a locked chDB path is a clear error."""
    from cloudtap.server.store.clickhouse import ClickHouseStore

    try:
        store = ClickHouseStore(dsn, database=database, cluster=cluster, **kwargs)
        store.migrate()
    except CloudtapError:
        raise
    except Exception as exc:  # chDB refuses a data path another process holds
        raise CloudtapError(
            f"cannot open the store {dsn}: {exc} (is another cloudtap process using it?)"
        ) from exc
    return store


@server_app.command("run")
def run_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="server YAML config")] = None,
    data: Annotated[
        Path | None, typer.Option(help="embedded chDB data directory (overrides storage.dsn)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="API port (overrides the config; 0 = any free port)")
    ] = None,
    listen: Annotated[str | None, typer.Option(help="API address (overrides the config)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the server in the foreground: API at /api/v1, OpenAPI docs at /docs, metrics at /metrics."""
    import uvicorn

    from cloudtap.server.api.app import create_app
    from cloudtap.server.settings import load_server_settings

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    err = Console(stderr=True)
    try:
        settings = load_server_settings(config)
        storage = settings.storage
        api = settings.api
        if data is not None:
            storage = storage.model_copy(update={"dsn": f"chdb://{data.resolve()}"})
        api = api.model_copy(update={k: v for k, v in (("port", port), ("listen", listen)) if v is not None})
        settings = settings.model_copy(update={"storage": storage, "api": api})
        store = open_store(storage.dsn, storage.database, storage.cluster)
    except CloudtapError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    app = create_app(settings, store)
    sock = socket.socket(socket.AF_INET6 if ":" in api.listen else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((api.listen, api.port))
    except OSError as exc:
        store.close()
        err.print(f"[bold red]error:[/] cannot listen on {api.listen}:{api.port}: {exc.strerror}")
        raise typer.Exit(1) from exc
    host, bound = sock.getsockname()[:2]
    url = f"http://{host}:{bound}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    err.print(f"cloudtap server on [bold]{url}[/] (docs {url}/docs), storage {storage.dsn}")
    if api.status_file is not None:
        api.status_file.write_text(url + "\n", encoding="utf-8")
    try:
        server.run(sockets=[sock])
    finally:
        store.close()


def import_command(
    files: Annotated[list[Path], typer.Argument(help="pcap/pcapng files, metered in order as one stream")],
    data: Annotated[
        Path | None, typer.Option(help="embedded chDB data directory (no server running on it)")
    ] = None,
    server: Annotated[str | None, typer.Option(help="server URL, e.g. http://127.0.0.1:8470")] = None,
    bpf: Annotated[str | None, typer.Option("--filter", help="tcpdump filter")] = None,
) -> None:
    """Meter captures and store their flows and edges (forensics on an existing capture)."""
    from cloudtap.cli.meter_cmd import summary_line
    from cloudtap.server.importer import import_tables

    err = Console(stderr=True)
    if (data is None) == (server is None):
        err.print("[red]give exactly one of --data DIR (embedded store) or --server URL[/]")
        raise typer.Exit(2)
    for f in files:
        if not f.is_file():
            err.print(f"[red]no such file: {f}[/]")
            raise typer.Exit(2)
    total = sum(f.stat().st_size for f in files)
    try:
        columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("import", total=total)
            imported = import_tables(files, bpf=bpf, progress=lambda d, t: bar.update(task, completed=d))
        if data is not None:
            store = open_store(f"chdb://{data.resolve()}")
            try:
                from cloudtap.inventory.service import store_tagger
                from cloudtap.server.ingest import Ingestor

                result = Ingestor(store, tagger=store_tagger(store)).ingest_tables(
                    imported.tables, imported.key
                )
            finally:
                store.close()
            duplicate, rows = result.duplicate, result.rows
        else:
            from cloudtap.ship.transport import HttpTransport
            from cloudtap.ship.wire import encode_batch

            payload = encode_batch(imported.key.agent_id, imported.key.seq, imported.tables)
            sent = HttpTransport(server.rstrip("/") + "/api/v1/ingest", timeout_s=120).send(
                imported.key.agent_id, imported.key.seq, payload
            )
            if not sent.ok:
                err.print(f"[bold red]error:[/] server refused the import ({sent.status}): {sent.detail}")
                raise typer.Exit(1)
            duplicate, rows = False, {k: t.num_rows for k, t in imported.tables.items()}
    except CloudtapError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    err.print(summary_line(imported.result))
    stored = ", ".join(f"{n:,} {k}" for k, n in rows.items())
    err.print(f"stored {stored}" + (" (already imported before: nothing added)" if duplicate else ""))
    if imported.result.partial:
        raise typer.Exit(3)
