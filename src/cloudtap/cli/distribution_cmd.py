"""`cloudtap fleet destination ...` and `cloudtap fleet distribution ...`: where copies of VM packets go, and
which VMs' packets (docs/controller.md, "Distribution policies"); `--dry-run` shows what a policy would
have sent over a past window, from the stored flows, without applying it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from cloudtap.cli.dry_run_view import DryRunOpt, FromOpt, SinceOpt, ToOpt, human_bps, show_dry_run, window
from cloudtap.cli.fleet_cmd import JsonOpt, _q, api
from cloudtap.cli.render import make_console
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

destination_app = typer.Typer(help="Destinations of distributed packets: VXLAN, GRE, ERSPAN II/III or raw.",
                              no_args_is_help=True)  # fmt: skip
distribution_app = typer.Typer(help="Distribution policies: copy selected VMs' packets to destinations.",
                               no_args_is_help=True)  # fmt: skip
FileOpt = Annotated[
    Path | None, typer.Option("--file", "-f", help="YAML document (options given override it)")
]
ProjectOpt = Annotated[str | None, typer.Option("--project", help="select: project name (glob)")]
VmOpt = Annotated[str | None, typer.Option("--vm", help="select: VM name (glob)")]
SubnetOpt = Annotated[str | None, typer.Option("--subnet", help="select: CIDR, or subnet name")]
HostOpt = Annotated[str | None, typer.Option("--host", help="select: host name (glob)")]
TagOpt = Annotated[str | None, typer.Option("--tag", help="select: VM tag (glob)")]
BpfOpt = Annotated[str | None, typer.Option("--bpf", help="tcpdump filter on top of the VM selection")]
PriorityOpt = Annotated[int | None, typer.Option("--priority", help="lower first")]


def _doc(file: Path | None) -> dict[str, Any]:
    if file is None:
        return {}
    doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise typer.BadParameter("the file must hold one YAML mapping", param_hint="--file")
    return doc


def _set(doc: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``doc`` with the given options (None: not given) laid over it."""
    return {**doc, **{k: v for k, v in values.items() if v is not None}}


def selector(doc: dict[str, Any], project: str | None, vm: str | None, subnet: str | None, host: str | None,
             tag: str | None) -> dict[str, Any]:  # fmt: skip
    """``doc`` with its ``select`` completed by the options."""
    return {**doc, "select": _set(dict(doc.get("select") or {}), project=project, vm=vm, subnet=subnet, host=host,
                                  tag=tag)}  # fmt: skip


# -- destinations ---------------------------------------------------------------------------------------
@destination_app.command("add")
def destination_add(
    name: Annotated[str, typer.Argument(help="destination name ([a-z0-9_.-])")],
    encap: Annotated[str | None, typer.Option(help="vxlan | gre | erspan2 | erspan3 | raw")] = None,
    address: Annotated[str | None, typer.Option(help="underlay remote (IPv4 or IPv6)")] = None,
    source: Annotated[str | None, typer.Option(help="underlay source address")] = None,
    port: Annotated[int | None, typer.Option(help="VXLAN UDP port (4789)")] = None,
    vni: Annotated[int | None, typer.Option(help="VXLAN VNI")] = None,
    key: Annotated[int | None, typer.Option(help="GRE key")] = None,
    session_id: Annotated[int | None, typer.Option(help="ERSPAN session id")] = None,
    interface: Annotated[str | None, typer.Option(help="raw: the interface to send on")] = None,
    mtu: Annotated[int | None, typer.Option(help="underlay MTU (copies truncated to fit)")] = None,
    max_bps: Annotated[int | None, typer.Option(help="cap per agent, bits/s (0: none)")] = None,
    burst_bytes: Annotated[int | None, typer.Option(help="token-bucket burst")] = None,
    file: FileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Create or replace a destination (agents whose rules use it get it within a heartbeat)."""
    doc = _set(_doc(file), encap=encap, address=address, source=source, port=port, vni=vni, key=key,
               session_id=session_id, interface=interface, mtu=mtu, max_bps=max_bps, burst_bytes=burst_bytes)  # fmt: skip
    doc.pop("name", None)
    answer = api(Remote(server, token, ca), f"/api/v1/destinations/{_q(name)}", "PUT", doc)
    typer.echo(
        f"destination {name} saved; agents with a new config: {', '.join(answer.get('changed', [])) or 'none'}"
    )


@destination_app.command("list")
def destination_list(
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """Every destination, with the policies sending to it."""
    rows = api(Remote(server, token, ca), "/api/v1/destinations")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} destinations", header_style="bold cyan")
    for col in ("name", "encap", "to", "id", "mtu", "cap", "used by"):
        table.add_column(col)
    for d in rows:
        ident = {"vxlan": f"vni {d['vni']} port {d['port']}", "gre": f"key {d['key']}" if d["key"] is not None else "",
                 "erspan2": f"session {d['session_id']}", "erspan3": f"session {d['session_id']}"}.get(d["encap"], "")  # fmt: skip
        table.add_row(escape(d["name"]), d["encap"], escape(d["address"] or d["interface"] or ""), ident, str(d["mtu"]),
                      human_bps(d["max_bps"]) if d["max_bps"] else "none", escape(", ".join(d["used_by"])))  # fmt: skip
    make_console().print(table)


@destination_app.command("remove")
def destination_remove(
    name: Annotated[str, typer.Argument(help="destination name")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Delete a destination (refused while a distribution policy sends to it)."""
    api(Remote(server, token, ca), f"/api/v1/destinations/{_q(name)}", "DELETE")
    typer.echo(f"destination {name} removed")


# -- distribution policies ------------------------------------------------------------------------------
@distribution_app.command("add")
def distribution_add(
    name: Annotated[str, typer.Argument(help="policy name ([a-z0-9_.-])")],
    destination: Annotated[
        list[str] | None, typer.Option("--destination", "-d", help="destination (repeat)")
    ] = None,
    project: ProjectOpt = None,
    vm: VmOpt = None,
    subnet: SubnetOpt = None,
    host: HostOpt = None,
    tag: TagOpt = None,
    bpf: BpfOpt = None,
    direction: Annotated[str | None, typer.Option(help="both | from_vm | to_vm")] = None,
    truncate: Annotated[
        int | None, typer.Option(help="keep the first N bytes of each frame (0: whole)")
    ] = None,
    vlan: Annotated[str | None, typer.Option(help="keep | strip")] = None,
    priority: PriorityOpt = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="store it without applying it")] = False,
    file: FileOpt = None,
    dry_run: DryRunOpt = False,
    since: SinceOpt = "1h",
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    max_uplink_bps: Annotated[
        int | None, typer.Option(help="dry-run: host fuse threshold for every host")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or replace a distribution policy; with --dry-run, show what it would have forwarded instead."""
    doc = selector(_doc(file), project, vm, subnet, host, tag)
    doc = _set(doc, bpf=bpf, direction=direction, truncate=truncate, vlan=vlan, priority=priority,
               destinations=destination or None, enabled=False if disabled else None)  # fmt: skip
    remote = Remote(server, token, ca)
    if dry_run:
        body = {"kind": "distribution", "policy": {**doc, "name": name}, **window(since, time_from, time_to),
                "max_uplink_bps": max_uplink_bps}  # fmt: skip
        show_dry_run(remote, body, as_json)
        return
    doc.pop("name", None)
    answer = api(remote, f"/api/v1/distribution/{_q(name)}", "PUT", doc)
    typer.echo(
        f"distribution policy {name} saved; agents with a new config: {', '.join(answer.get('changed', [])) or 'none'}"
    )


@distribution_app.command("list")
def distribution_list(
    server: ServerOpt = None, token: TokenOpt = None, ca: CaOpt = None, as_json: JsonOpt = False
) -> None:
    """Every distribution policy, with how many agents and VMs it applies to."""
    rows = api(Remote(server, token, ca), "/api/v1/distribution")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} distribution policies", header_style="bold cyan")
    for col in (
        "name",
        "on",
        "prio",
        "select",
        "bpf",
        "direction",
        "truncate",
        "vlan",
        "to",
        "agents",
        "VMs",
    ):
        table.add_column(col)
    for p in rows:
        sel = " ".join(f"{k}={v}" for k, v in p["select"].items() if v is not None) or "every VM"
        table.add_row(escape(p["name"]), "yes" if p["enabled"] else "[dim]no[/]", str(p["priority"]), escape(sel),
                      escape(p["bpf"] or ""), p["direction"], str(p["truncate"] or "-"), p["vlan"],
                      escape(", ".join(p["destinations"])), str(p["agents"]), str(p["vms"]))  # fmt: skip
    make_console().print(table)


@distribution_app.command("show")
def distribution_show(
    name: Annotated[str, typer.Argument(help="policy name")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One policy and, per agent, the rule it compiled to (interfaces, MACs, VMs)."""
    answer = api(Remote(server, token, ca), f"/api/v1/distribution/{_q(name)}")
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    console = make_console()
    console.print(escape(yaml.safe_dump(answer["policy"], sort_keys=False)))
    if answer["missing_destinations"]:
        console.print(
            f"[yellow]destinations not defined: {escape(', '.join(answer['missing_destinations']))}[/]"
        )
    table = Table(title=f"compiled on {len(answer['compiled'])} agents", header_style="bold cyan")
    for col in ("agent", "host", "VMs", "interfaces", "MACs"):
        table.add_column(col)
    for r in answer["compiled"]:
        table.add_row(escape(r["agent"]), escape(r["host"]), escape(", ".join(r["vms"])),
                      escape(", ".join(r["interfaces"])), ", ".join(r["macs"]))  # fmt: skip
    console.print(table)


@distribution_app.command("remove")
def distribution_remove(
    name: Annotated[str, typer.Argument(help="policy name")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Delete a distribution policy (its agents stop sending within a heartbeat)."""
    api(Remote(server, token, ca), f"/api/v1/distribution/{_q(name)}", "DELETE")
    typer.echo(f"distribution policy {name} removed")


def forwarding_table(rows: list[dict[str, Any]], title: str) -> Table:
    """``fleet top --by forwarded_bps|forward_drops``: each agent's packet broker over the window."""
    table = Table(title=title, header_style="bold cyan")
    for col in ("agent", "host", "group", "forwarded", "forward drops", "fuse", "captured", "cpu %"):
        table.add_column(col, justify="left" if col in ("agent", "host", "group", "fuse") else "right")
    for r in rows:
        fuse = (
            "[red]stale[/]" if r["stale"] else "[bold red]open[/]" if r.get("broker_fuse_open") else "closed"
        )
        table.add_row(escape(r["name"]), escape(r["host"]), escape(r["group"]), human_bps(r.get("forwarded_bps", 0.0)),
                      f"{r.get('forward_drops', 0):,}", fuse, human_bps(r["bps"]), f"{r['cpu']:.0f}")  # fmt: skip
    return table


def add_distribution_commands(fleet: typer.Typer) -> None:
    """Register ``destination``, ``distribution`` and ``policy`` (with ``add --dry-run``) under ``fleet``."""
    from cloudtap.cli.policy_cmd import policy_app

    if getattr(fleet, "_distribution_added", False):
        return
    fleet.add_typer(destination_app, name="destination")
    fleet.add_typer(distribution_app, name="distribution")
    fleet.add_typer(policy_app, name="policy")
    fleet._distribution_added = True  # type: ignore[attr-defined]
