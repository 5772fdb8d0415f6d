"""`cloudtap inventory`: list entities, show history, sync connectors, connector status, check a static file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cloudtap.cli.errors import CliError
from cloudtap.cli.render import make_console
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

_FORMAT = typer.Option("--format", "-f", help="table or json")
#: Columns shown per kind in table output (after id and name).
_COLUMNS = {
    "vm": ("project", "host", "state"),
    "host": ("region", "zone", "address"),
    "interface": ("mac", "ips", "vm", "device"),
    "subnet": ("cidr", "network", "project"),
    "network": ("project", "segment"),
    "project": ("region",),
    "pod": ("namespace", "node", "ip"),
    "service": ("namespace", "cluster_ips"),
}

inventory_app = typer.Typer(help="The cloud inventory: entities, history, connectors.", no_args_is_help=True)


def _call(remote: Remote, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
    try:
        return remote.client(timeout_s=120).call_json(method, f"/api/v1/inventory/{path}", params=params)
    except CliError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 1) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


@inventory_app.command("list")
def list_command(
    kind: Annotated[
        str, typer.Argument(help="vm, host, project, subnet, network, interface, region, pod, service...")
    ],
    at: Annotated[str | None, typer.Option(help="as it was at this time (ISO 8601, epoch, -1h)")] = None,
    name: Annotated[str | None, typer.Option(help="name filter (* globs)")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 1000,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    fmt: Annotated[str, _FORMAT] = "table",
) -> None:
    """List the entities of one kind (now, or as they were at --at)."""
    answer = _call(Remote(server, token, ca), "GET", kind, {"at": at, "name": name, "limit": limit})
    if fmt == "json":
        typer.echo(json.dumps(answer, indent=2))
        return
    extra = _COLUMNS.get(kind, ())
    table = Table("id", "name", *extra, "source", "key")
    for item in answer["items"]:
        label = item.get("name") or item.get("mac", "")
        table.add_row(
            str(item["id"]), label, *(_cell(item.get(c)) for c in extra), item["source"], item["key"]
        )
    console = make_console()
    console.print(table)
    console.print(f"{answer['total']} {kind}(s)" + (f", {limit} shown" if answer["total"] > limit else ""))


@inventory_app.command("history")
def history_command(
    kind: Annotated[str, typer.Argument(help="entity kind")],
    key: Annotated[str, typer.Argument(help="the entity's key")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    fmt: Annotated[str, _FORMAT] = "table",
) -> None:
    """Every validity interval of one entity (a VM that moved host shows one per host)."""
    from cloudtap.server.query.timespec import iso

    answer = _call(Remote(server, token, ca), "GET", f"{kind}/history", {"key": key})
    if fmt == "json":
        typer.echo(json.dumps(answer, indent=2))
        return
    table = Table("valid from", "valid to", "source", "name", "attributes")
    for iv in answer["intervals"]:
        attrs = {
            k: v for k, v in iv["attrs"].items() if k not in ("key", "name") and v not in ("", None, [], ())
        }
        until = "now" if iv["valid_to"] is None else iso(iv["valid_to"])
        table.add_row(iso(iv["valid_from"]), until, iv["source"], iv["name"], json.dumps(attrs))
    make_console().print(table)


@inventory_app.command("sync")
def sync_command(
    connector: Annotated[str | None, typer.Option(help="only this connector")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Sync the connectors now; prints what changed, or each failure (exit 1 if any failed)."""
    answer = _call(Remote(server, token, ca), "POST", "sync", {"connector": connector})
    console = make_console()
    failed = False
    for r in answer["results"]:
        if r["ok"]:
            s = r["summary"]
            console.print(f"{r['connector']}: {s['total']} change(s) added={s['added']} changed={s['changed']} "
                          f"removed={s['removed']}", highlight=False)  # fmt: skip
        else:
            failed = True
            console.print(f"[red]{r['connector']}: failed:[/] {r['error']}", highlight=False)
    if not answer["results"]:
        console.print("no connector is configured (inventory.static_file, openstack, vsphere, kubernetes)")
    if failed:
        raise typer.Exit(1)


@inventory_app.command("status")
def status_command(
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    fmt: Annotated[str, _FORMAT] = "table",
) -> None:
    """Connectors (last success, last error), counts per kind, tagging counters."""
    from cloudtap.server.query.timespec import iso

    answer = _call(Remote(server, token, ca), "GET", "status")
    if fmt == "json":
        typer.echo(json.dumps(answer, indent=2))
        return
    table = Table("connector", "ok", "syncs", "failures", "last success", "last error")
    for c in answer["connectors"]:
        ok = "[green]yes[/]" if c["ok"] else "[red]no[/]"
        last = iso(c["last_success_ns"]) if c["last_success_ns"] else "-"
        table.add_row(c["name"], ok, str(c["syncs"]), str(c["failures"]), last, c["last_error"] or "")
    console = make_console()
    console.print(table)
    counts = ", ".join(f"{n} {k}" for k, n in answer["counts"].items() if n)
    console.print(
        f"inventory: {counts or 'empty'}; tagged rows: {answer['tagging']['rows']:,}", highlight=False
    )


@inventory_app.command("check")
def check_command(path: Annotated[Path, typer.Argument(help="static inventory (.yaml/.csv)")]) -> None:
    """Validate a static inventory file and summarise it (no server needed)."""
    from cloudtap.errors import ConfigError
    from cloudtap.inventory.connectors.static import load_static
    from cloudtap.inventory.entities import KIND_SPECS

    try:
        snap = load_static(path)
    except ConfigError as exc:
        _fail(str(exc), 2)
    counts = ", ".join(f"{len(getattr(snap, a))} {k}" for k, (a, _) in KIND_SPECS.items() if getattr(snap, a))
    make_console().print(f"{path}: ok ({counts or 'empty'})", highlight=False)
