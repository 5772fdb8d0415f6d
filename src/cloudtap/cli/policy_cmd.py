"""`cloudtap fleet policy`: capture policies. Without a subcommand, as before: list them, create or replace
them from YAML (``-f``), delete one (``--delete``). ``add NAME ...`` writes one from options, or with
``--dry-run`` shows what it would have captured (or stored) over a past window, applying nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudtap.cli.distribution_cmd import (
    BpfOpt,
    FileOpt,
    HostOpt,
    PriorityOpt,
    ProjectOpt,
    SubnetOpt,
    TagOpt,
    VmOpt,
    _doc,
    _set,
    selector,
)
from cloudtap.cli.dry_run_view import DryRunOpt, FromOpt, SinceOpt, ToOpt, show_dry_run, window
from cloudtap.cli.fleet_cmd import JsonOpt, _q, api, policy_command
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

policy_app = typer.Typer(help="Capture policies: list, -f FILE, --delete NAME; add NAME [--dry-run].")


@policy_app.callback(invoke_without_command=True)
def policy_root(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="YAML: one policy or a list")] = None,
    delete: Annotated[str | None, typer.Option(help="delete the policy with this name")] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """List policies, create/replace them from YAML, or delete one; shows what they compile to."""
    if ctx.invoked_subcommand is None:
        policy_command(file, delete, server, token, ca)


@policy_app.command("add")
def policy_add(
    name: Annotated[str, typer.Argument(help="policy name")],
    project: ProjectOpt = None,
    vm: VmOpt = None,
    subnet: SubnetOpt = None,
    host: HostOpt = None,
    tag: TagOpt = None,
    bpf: BpfOpt = None,
    priority: PriorityOpt = None,
    exclude: Annotated[
        bool, typer.Option("--exclude", help="exclude the selected VMs instead of capturing")
    ] = False,
    snaplen: Annotated[int | None, typer.Option(help="bytes kept per packet")] = None,
    payload_bytes: Annotated[
        int | None,
        typer.Option("--payload-bytes", help="bytes of L4 payload kept per packet (0: headers only)"),
    ] = None,
    requests: Annotated[
        bool | None,
        typer.Option("--requests/--no-requests", help="parse application requests (default: if payload)"),
    ] = None,
    store_packets: Annotated[
        bool, typer.Option("--store-packets", help="keep packets for PCAP retrieval")
    ] = False,
    disabled: Annotated[bool, typer.Option("--disabled", help="store it without applying it")] = False,
    file: FileOpt = None,
    dry_run: DryRunOpt = False,
    since: SinceOpt = "1h",
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or replace a capture policy; with --dry-run, show what it would have captured instead (a storage
    dry-run with --store-packets)."""
    doc = selector(_doc(file), project, vm, subnet, host, tag)
    action = _set(dict(doc.get("action") or {}), capture=False if exclude else None, snaplen=snaplen,
                  store_packets=True if store_packets else None, payload_bytes=payload_bytes,
                  requests=requests)  # fmt: skip
    doc = _set({**doc, "action": action}, bpf=bpf, priority=priority, enabled=False if disabled else None)
    remote = Remote(server, token, ca)
    if dry_run:
        kind = "storage" if action.get("store_packets") else "capture"
        body = {"kind": kind, "policy": {**doc, "name": name}, **window(since, time_from, time_to)}
        show_dry_run(remote, body, as_json)
        if not as_json and action.get("payload_bytes"):
            typer.echo(payload_line(action))
        return
    doc.pop("name", None)
    answer = api(remote, f"/api/v1/policies/{_q(name)}", "PUT", doc)
    typer.echo(
        f"policy {name} saved; agents with a new config: {', '.join(answer.get('changed', [])) or 'none'}"
    )
    if action.get("payload_bytes"):
        typer.echo(payload_line(action))


def payload_line(action: dict[str, object]) -> str:
    """What a policy keeping payload asks of the agents, in words."""
    from cloudtap.capture.policy_filter import payload_snaplen

    payload = int(action.get("payload_bytes") or 0)  # type: ignore[call-overload]
    requests = action.get("requests")
    parsed = payload > 0 if requests is None else bool(requests)
    return (f"payload: {payload} bytes of L4 payload kept per packet (snaplen {payload_snaplen(payload)}); "
            f"application requests {'parsed' if parsed else 'not parsed'}")  # fmt: skip
