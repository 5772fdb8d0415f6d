"""Rich tables of a policy dry-run (``POST /api/v1/policies/dry-run``), and the options that ask for one."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloudtap.cli.render import human_bytes

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="apply nothing: show what it would have matched in the stored flows")
]
SinceOpt = Annotated[str, typer.Option("--since", help="dry-run window ending now: 15m, 1h, 2d")]
FromOpt = Annotated[
    str | None, typer.Option("--from", help="dry-run window start (ISO 8601, epoch, -1h); wins over --since")
]
ToOpt = Annotated[str | None, typer.Option("--to", help="dry-run window end (default now)")]


def window(since: str, time_from: str | None, time_to: str | None) -> dict[str, Any]:
    """The body's ``time_from``/``time_to`` (as the analysis commands take them)."""
    start = time_from if time_from is not None else (since if since.startswith("-") else f"-{since}")
    return {"time_from": start, "time_to": time_to}


def human_bps(bps: float) -> str:
    """3.2e9 -> '3.2 Gbit/s'."""
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if abs(bps) < 1000 or unit == "Gbit/s":
            return f"{bps:.0f} {unit}" if unit == "bit/s" else f"{bps:.1f} {unit}"
        bps /= 1000
    return f"{bps:.1f} Gbit/s"


def _mark(tripped: bool) -> str:
    return "[bold red]yes[/]" if tripped else "[green]no[/]"


def print_dry_run(answer: dict[str, Any], console: Console) -> None:
    """Per agent, totals, and (distribution) per destination."""
    w = answer["window"]
    distribution = answer["kind"] == "distribution"
    table = Table(title=f"dry-run of {answer['kind']} policy {answer['policy']!r}: {answer['vms']} VMs selected",
                  caption=f"stored flows {w['from']} -> {w['to']}", header_style="bold cyan")  # fmt: skip
    cols = ["agent", "host", "VMs", "interfaces", "flows", "packets", "bytes"]
    cols += ["forwarded", "peak fwd", "peak host", "fuse"] if distribution else []
    for col in cols:
        table.add_column(col, justify="left" if col in ("agent", "host", "VMs", "interfaces") else "right")
    for a in answer["agents"]:
        row = [escape(a["agent"] or a["agent_id"] or "(no agent)"), escape(a["host"]), escape(", ".join(a["vms"])),
               escape(", ".join(a["interfaces"])), f"{a['flows']:,}", f"{a['packets']:,}", human_bytes(a["bytes"])]  # fmt: skip
        if distribution:
            fuse = _mark(a["fuse_tripped"]) if a["fuse_limit_bps"] else "[dim]not watched[/]"
            row += [human_bytes(a["forwarded_bytes"]), human_bps(a["peak_forwarded_bps"]),
                    human_bps(a["peak_host_bps"]), fuse]  # fmt: skip
        table.add_row(*row)
    t = answer["totals"]
    table.add_section()
    table.add_row("[bold]total[/]", "", "", "", f"{t['flows']:,}", f"{t['packets']:,}", human_bytes(t["bytes"]),
                  *([human_bytes(sum(a["forwarded_bytes"] for a in answer["agents"])), "", "",
                     _mark(answer["fuse_tripped"])] if distribution else []))  # fmt: skip
    console.print(table)
    if "stored_bytes" in answer:
        console.print(f"packets stored (snaplen applied, estimated): {human_bytes(answer['stored_bytes'])}")
    if distribution:
        dests = Table(title="per destination", header_style="bold cyan")
        for col in (
            "destination",
            "cap",
            "forwarded",
            "peak per agent",
            "peak all agents",
            "cap tripped",
            "intervals over",
        ):
            dests.add_column(col, justify="left" if col == "destination" else "right")
        for d in answer["destinations"]:
            name = escape(d["destination"]) + ("" if d["defined"] else " [yellow](not defined)[/]")
            dests.add_row(name, human_bps(d["max_bps"]) if d["max_bps"] else "none", human_bytes(d["forwarded_bytes"]),
                          human_bps(d["peak_bps"]), human_bps(d["peak_total_bps"]), _mark(d["cap_tripped"]),
                          f"{d['intervals_over_cap']:,}")  # fmt: skip
        console.print(dests)
        rollup = answer.get("rollup")
        console.print(f"peaks from {rollup['table']} ({rollup['interval_s']} s intervals); truncation estimated as "
                      "packets x min(average frame, truncate)" if rollup else "no edges stored in the window: no peaks")  # fmt: skip
    if answer.get("bpf_evaluated"):
        console.print("[dim]the policy's bpf was run on each flow direction's header (exact for address, port, "
                      "protocol and VLAN filters)[/]")  # fmt: skip
    console.print("[dim]nothing applied[/]")


def show_dry_run(remote: Any, body: dict[str, Any], as_json: bool) -> None:
    """Ask the server what the policy in ``body`` would have matched, and print it (JSON or tables)."""
    import json

    from cloudtap.cli.fleet_cmd import api
    from cloudtap.cli.render import make_console

    answer = api(remote, "/api/v1/policies/dry-run", "POST", body)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
    else:
        print_dry_run(answer, make_console())
