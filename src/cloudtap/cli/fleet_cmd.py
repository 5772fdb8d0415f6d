"""`cloudtap fleet`: the controller's view of all agents (tops, hosts, stale agents, "why no data for VM X?"),
and fleet administration (capture start/stop, group config, policies)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from cloudtap.cli.errors import CliError
from cloudtap.cli.render import human_bytes, make_console
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

JsonOpt = Annotated[bool, typer.Option("--json", help="raw JSON")]

fleet_app = typer.Typer(help="Agents under the controller: monitoring, diagnosis, start/stop, config, policies.",
                        no_args_is_help=True)  # fmt: skip


def api(
    remote: Remote, path: str, method: str = "GET", body: Any = None, params: dict[str, Any] | None = None
) -> Any:
    """Call the server API; prints the reason and exits 1 on failure."""
    try:
        return remote.client(timeout_s=30).call_json(method, path, body, params)
    except CliError as exc:
        make_console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.0f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )


def _agents_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, header_style="bold cyan")
    for col in (
        "agent",
        "host",
        "group",
        "state",
        "cpu %",
        "rss",
        "captured",
        "pps",
        "drops",
        "seen",
        "config",
    ):
        table.add_column(
            col, justify="right" if col in ("cpu %", "rss", "captured", "pps", "drops") else "left"
        )
    for r in rows:
        state = (
            "[red]stale[/]"
            if r["stale"]
            else "[green]capturing[/]"
            if r["capturing"]
            else "[yellow]paused[/]"
        )
        cfg = f"v{r['applied_version']}/{r['config_version']}" + (
            " [yellow]restart[/]" if r["restart_required"] else ""
        )
        table.add_row(r["name"], r["host"], r["group"], state, f"{r['cpu']:.0f}", human_bytes(r["memory"]),
                      f"{human_bytes(r['bps'] / 8)}/s", f"{r['pps']:,.0f}", f"{r['drops']:,}", _age(r["last_seen_s"]),
                      cfg)  # fmt: skip
    return table


@fleet_app.command("top")
def top_command(
    by: Annotated[str, typer.Option(help="cpu, memory, bps, pps, shipped_bps, forwarded_bps, forward_drops, drops, "
                                        "load")] = "cpu",  # fmt: skip
    window: Annotated[str, typer.Option(help="1m, 5m, 1h")] = "1m",
    limit: Annotated[int, typer.Option(help="rows")] = 20,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top agents by CPU, memory, captured bps, drops... over the last minute or hour."""
    rows = api(
        Remote(server, token, ca), "/api/v1/fleet/top", params={"by": by, "window": window, "limit": limit}
    )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if by.startswith("forward"):  # the packet broker's figures (cli.distribution_cmd)
        from cloudtap.cli.distribution_cmd import forwarding_table

        make_console().print(forwarding_table(rows, f"top agents by {by} ({window})"))
        return
    make_console().print(_agents_table(rows, f"top agents by {by} ({window})"))


@fleet_app.command("hosts")
def hosts_command(
    window: str = "1m",
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hosts by load, with their agents."""
    rows = api(Remote(server, token, ca), "/api/v1/fleet/hosts", params={"window": window})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"hosts by load ({window})", header_style="bold cyan")
    for col in ("host", "address", "load", "per core", "agents", "state"):
        table.add_column(col)
    for h in rows:
        per = f"{h['load_per_core']:.2f}" if h["load_per_core"] is not None else "-"
        table.add_row(h["host"], h["address"], f"{h['load']:.2f}", per, ", ".join(h["agents"]),
                      "[red]stale[/]" if h["stale"] else "ok")  # fmt: skip
    make_console().print(table)


@fleet_app.command("stale")
def stale_command(
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """Agents that stopped reporting (no heartbeat for 3 periods); exit code 3 when there are any."""
    rows = api(Remote(server, token, ca), "/api/v1/fleet/stale")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif rows:
        make_console().print(_agents_table(rows, "stale agents"))
    else:
        typer.echo("no stale agents")
    if rows:
        raise typer.Exit(3)


@fleet_app.command("agents")
def agents_command(
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """Every registered agent."""
    rows = api(Remote(server, token, ca), "/api/v1/agents")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    make_console().print(_agents_table(sorted(rows, key=lambda r: r["name"]), f"{len(rows)} agents"))


@fleet_app.command("why")
def why_command(
    vm: Annotated[str, typer.Option("--vm", help="VM name (or inventory key)")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Why is there no data for VM X? Walks the chain and names the first broken link (exit 3 if one is)."""
    d = api(Remote(server, token, ca), f"/api/v1/diagnose/vm/{_q(vm)}")
    if as_json:
        typer.echo(json.dumps(d, indent=2))
    else:
        console = make_console()
        marks = {
            "ok": "[green]ok[/]",
            "broken": "[bold red]BROKEN[/]",
            "warn": "[yellow]warn[/]",
            "skipped": "[dim]skip[/]",
        }
        width = max((len(s["step"]) for s in d["steps"]), default=11)
        for s in d["steps"]:
            console.print(f"{marks.get(s['status'], s['status']):>8}  {s['step']:<{width}} {escape(s['detail'])}")
        console.print(
            ("[bold red]broken link:[/] " if d["broken"] else "[green]")
            + escape(d["summary"])
            + ("" if d["broken"] else "[/]")
        )
        if d["broken"] and d.get("fix"):  # servers before the fixes answer without one
            console.print(f"[bold]what to do:[/] {escape(d['fix'])}")
    if d["broken"]:
        raise typer.Exit(3)


@fleet_app.command("capture")
def capture_command(
    action: Annotated[str, typer.Argument(help="start or stop")],
    agent: Annotated[str | None, typer.Option(help="agent id, name or host name")] = None,
    group: Annotated[str | None, typer.Option(help="every agent of this group")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Start or stop capture on an agent or a group (applied within a second)."""
    if (agent is None) == (group is None) or action not in ("start", "stop"):
        make_console(stderr=True).print("[red]give start|stop and exactly one of --agent or --group[/]")
        raise typer.Exit(2)
    path = (
        f"/api/v1/agents/{_q(agent)}/capture/{action}"
        if agent
        else f"/api/v1/groups/{_q(group or '')}/capture/{action}"
    )
    typer.echo(json.dumps(api(Remote(server, token, ca), path, "POST")))


@fleet_app.command("group-config")
def group_config_command(
    group: Annotated[str, typer.Argument(help="group name")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="YAML overlay (partial agent config); none: show")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Show or set a group's config overlay; prints each key's apply mode (hot / restart)."""
    remote = Remote(server, token, ca)
    if file is None:
        groups = {g["name"]: g for g in api(remote, "/api/v1/groups")}
        typer.echo(yaml.safe_dump(groups.get(group, {"name": group, "overlay": {}}), sort_keys=False))
        return
    overlay = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    typer.echo(
        json.dumps(api(remote, f"/api/v1/groups/{_q(group)}/config", "PUT", {"overlay": overlay}), indent=2)
    )


def policy_command(  # registered as `fleet policy` by cli.policy_cmd (with `add`)
    file: Annotated[Path | None, typer.Option("--file", "-f", help="YAML: one policy or a list")] = None,
    delete: Annotated[str | None, typer.Option(help="delete the policy with this name")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """List policies, create/replace them from YAML, or delete one; shows what they compile to."""
    remote = Remote(server, token, ca)
    if delete:
        api(remote, f"/api/v1/policies/{_q(delete)}", "DELETE")
    if file is not None:
        docs = yaml.safe_load(file.read_text(encoding="utf-8"))
        for doc in docs if isinstance(docs, list) else [docs]:
            api(remote, f"/api/v1/policies/{_q(str(doc['name']))}", "PUT", doc)
    typer.echo(yaml.safe_dump({"policies": api(remote, "/api/v1/policies"),
                               "compiled": api(remote, "/api/v1/controller/compiled")}, sort_keys=False))  # fmt: skip
