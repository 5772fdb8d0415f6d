"""`cloudtap server` and `cloudtap import`: run the server (HTTP or HTTPS), make its certificates; store captures."""

from __future__ import annotations

import gc
import logging
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudtap.cli.errors import CliError
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt
from cloudtap.errors import CloudtapError

#: Idle keep-alive connections stay open this long: longer than HTTP clients keep theirs (httpx, the agents'
#: client: 5 s), so a client always closes first and never sends on a connection the server just closed
#: (uvicorn's 5 s default raced the agents' 5 s: resets under load, retried, counted as ship errors).
KEEP_ALIVE_S = 30

server_app = typer.Typer(
    help="The server: ingest, storage (embedded chDB or ClickHouse) and the API.", no_args_is_help=True
)


def open_store(dsn: str, database: str = "cloudtap", cluster: str | None = None, **kwargs: Any) -> Any:
    """Open (and migrate) the ClickHouse store behind ``dsn``; a locked chDB path is a clear error."""
    from cloudtap.server.store.clickhouse import ClickHouseStore

    try:
        store = ClickHouseStore(dsn, database=database, cluster=cluster, **kwargs)
    except CloudtapError:
        raise
    except Exception as exc:  # chDB refuses a data path another process holds
        raise CloudtapError(
            f"cannot open the store {dsn}: {exc} (is another cloudtap process using it?)"
        ) from exc
    try:
        store.migrate()  # also brings the tables' TTLs to ``retention`` (ALTER when it changed)
    except Exception as exc:
        store.close()  # release the chDB path
        if isinstance(exc, CloudtapError):
            raise
        raise CloudtapError(f"cannot migrate the store {dsn}: {exc}") from exc
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
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate: serve HTTPS (overrides api.tls_cert; needs --tls-key)"),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key of the certificate (api.tls_key)")
    ] = None,
    admin_password_file: Annotated[
        Path | None,
        typer.Option(help="first start: the admin's password (auth.admin_password_file; else one is printed once)"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the server in the foreground: API at /api/v1, OpenAPI docs at /docs, metrics at /metrics.

    At the first start it creates the first admin (``auth.admin_user``) and prints its password once,
    unless ``--admin-password-file`` gives it.
    """
    import uvicorn
    from pydantic import ValidationError

    from cloudtap.server.access.bootstrap import ensure_admin
    from cloudtap.server.api.app import create_app
    from cloudtap.server.housekeeping import retention_policy
    from cloudtap.server.settings import ApiSection, load_server_settings

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    err = Console(stderr=True)
    try:
        settings = load_server_settings(config)
        storage = settings.storage
        if data is not None:
            storage = storage.model_copy(update={"dsn": f"chdb://{data.resolve()}"})
        overrides = {"port": port, "listen": listen, "tls_cert": tls_cert, "tls_key": tls_key}
        try:
            api = ApiSection.model_validate(
                {**settings.api.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
            )
        except ValidationError as exc:
            raise CloudtapError(
                "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            ) from exc
        if api.tls_cert is not None and api.tls_key is not None:
            check_tls_files(api.tls_cert, api.tls_key)
        auth = settings.auth
        if admin_password_file is not None:
            auth = auth.model_copy(update={"admin_password_file": admin_password_file})
        settings = settings.model_copy(update={"storage": storage, "api": api, "auth": auth})
        store = open_store(
            storage.dsn, storage.database, storage.cluster, retention=retention_policy(storage)
        )
    except CloudtapError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    try:
        app = create_app(settings, store)
        generated = ensure_admin(app.state.access, settings.auth)
    except CloudtapError as exc:
        store.close()
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    sock = socket.socket(socket.AF_INET6 if ":" in api.listen else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((api.listen, api.port))
    except OSError as exc:
        store.close()
        err.print(f"[bold red]error:[/] cannot listen on {api.listen}:{api.port}: {exc.strerror}")
        raise typer.Exit(1) from exc
    host, bound = sock.getsockname()[:2]
    url = f"{'https' if api.tls else 'http'}://{f'[{host}]' if ':' in host else host}:{bound}"
    tls: dict[str, Any] = {"ssl_certfile": api.tls_cert, "ssl_keyfile": api.tls_key} if api.tls else {}
    # agents hold command long-polls open (up to 25 s): a stop waits 5 s for requests in flight, no longer
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_S, **tls
        )
    )
    err.print(f"cloudtap server on [bold]{url}[/] (docs {url}/docs), storage {storage.dsn}")
    if generated is not None:
        err.print(f"first start: created admin user [bold]{settings.auth.admin_user}[/] with password "
                  f"[bold]{generated}[/] (shown once; change it with `cloudtap user passwd`)")  # fmt: skip
    if settings.controller.token is None and not settings.controller.agent_tokens:
        err.print("[yellow]warning:[/] no controller.token: any host that reaches this port can register an agent")
    sock.listen(2048)  # connections queue from now on: the status file is only written once they can
    if api.status_file is not None:
        api.status_file.write_text(url + "\n", encoding="utf-8")
    # everything built so far lives as long as the server: out of the collector's way, so a full collection
    # walks only newer objects (it walked ~200k at start, 80-100 ms with every thread stopped, later more)
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[sock])
    finally:
        store.close()


def check_tls_files(cert: Path, key: Path) -> None:
    """Load the certificate and key as the server will; a clear CloudtapError when they do not fit."""
    import ssl

    for path in (cert, key):
        if not path.is_file():
            raise CloudtapError(f"TLS file {path} does not exist")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except PermissionError as exc:
        raise CloudtapError(f"cannot read {exc.filename}: permission denied") from exc
    except (OSError, ssl.SSLError) as exc:
        raise CloudtapError(f"TLS certificate {cert} / key {key} unusable: {exc}") from exc


@server_app.command("certs")
def certs_command(
    out: Annotated[Path, typer.Option("--out", help="directory for the CA, server and agent files")],
    host: Annotated[
        list[str], typer.Option("--host", help="server name or IP address clients connect to (repeatable)")
    ],
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", help="also issue a client certificate for this agent (repeatable)"),
    ] = None,
    name: Annotated[str, typer.Option(help="file name stem of the server certificate")] = "server",
    days: Annotated[int, typer.Option(min=1, help="validity of the server and agent certificates")] = 825,
    ca_days: Annotated[int, typer.Option(min=1, help="validity of a new CA")] = 3650,
) -> None:
    """Make a private CA (unless DIR has one), a server certificate for the hosts, and agent certificates."""
    from cloudtap.tls import CA_CERT, CA_KEY, make_ca, make_certificate

    err = Console(stderr=True)
    out = out.resolve()
    have = [(out / f).exists() for f in (CA_CERT, CA_KEY)]
    try:
        if any(have) and not all(have):
            raise CloudtapError(f"{out} has only one of {CA_CERT} / {CA_KEY}: restore the other or remove it")
        written: list[tuple[str, Path, str]] = []
        if all(have):
            written.append(("CA (kept)", out / CA_CERT, "existing CA reused"))
        else:
            ca = make_ca(out, days=ca_days)
            written += [("CA", ca.cert, "trust anchor: give to agents and clients"),
                        ("CA key", ca.key, "signs certificates: keep offline, not on the server")]  # fmt: skip
        server = make_certificate(out, out, name, host, days=days)
        written += [
            ("server", server.cert, "SAN " + ", ".join(host)),
            ("server key", server.key, "server only"),
        ]
        for agent_name in agent or []:
            made = make_certificate(out, out, agent_name, [], days=days, client=True)
            written += [
                (f"agent {agent_name}", made.cert, "clientAuth"),
                (f"agent {agent_name} key", made.key, ""),
            ]
    except CloudtapError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console = Console(highlight=False, soft_wrap=True)  # paths and config lines stay whole, for copying
    for what, path, note in written:
        console.print(f"[bold]{what:<16}[/] {path}" + (f"  [dim]({note})[/]" if note else ""))
    ca_file = out / CA_CERT
    console.print("\n[bold]server[/] (server.yaml; the key must be readable by the server's user):")
    console.print(f"  api:\n    tls_cert: {server.cert}\n    tls_key: {server.key}")
    console.print(f"  or: cloudtap server run --tls-cert {server.cert} --tls-key {server.key}")
    console.print("[bold]agents and clients[/] (https:// URLs; trust the CA):")
    console.print(f"  SSL_CERT_FILE={ca_file}  (systemd unit: Environment=SSL_CERT_FILE={ca_file})")
    console.print(f"  Python: httpx.Client(verify=cloudtap.tls.client_ssl_context({str(ca_file)!r}))")


def import_command(
    files: Annotated[list[Path], typer.Argument(help="pcap/pcapng files, metered in order as one stream")],
    data: Annotated[
        Path | None, typer.Option(help="embedded chDB data directory (no server running on it)")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    bpf: Annotated[str | None, typer.Option("--filter", help="tcpdump filter")] = None,
) -> None:
    """Meter captures and store their flows and edges (forensics on an existing capture)."""
    from cloudtap.cli.meter_cmd import summary_line
    from cloudtap.server.importer import import_tables

    err = Console(stderr=True, soft_wrap=True)
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
            import httpx

            from cloudtap.ship.transport import HttpTransport
            from cloudtap.ship.wire import encode_batch
            from cloudtap.tls import client_ssl_context

            client = Remote(server, token, ca).client(timeout_s=120)  # the user's token and CA
            verify = httpx.HTTPTransport(verify=client_ssl_context(client.ca_file))
            payload = encode_batch(imported.key.agent_id, imported.key.seq, imported.tables)
            transport = HttpTransport(client.base, timeout_s=120, token=client.token, transport=verify)
            try:
                sent = transport.send(imported.key.agent_id, imported.key.seq, payload)
            finally:
                transport.close()
            if not sent.ok:
                why = client.explain(sent.status, sent.detail)
                err.print(f"[bold red]error:[/] {why or f'server refused the import ({sent.status}): {sent.detail}'}",
                          highlight=False)  # fmt: skip
                raise typer.Exit(1)
            duplicate, rows = False, {k: t.num_rows for k, t in imported.tables.items()}
    except (CloudtapError, CliError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(getattr(exc, "code", 1)) from exc
    err.print(summary_line(imported.result))
    stored = ", ".join(f"{n:,} {k}" for k, n in rows.items())
    err.print(f"stored {stored}" + (" (already imported before: nothing added)" if duplicate else ""))
    if imported.result.partial:
        raise typer.Exit(3)
