"""`cloudtap agent ...`: run the agent, and talk to a running one."""

from __future__ import annotations

import json
import logging
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cloudtap.cli.render import human_bytes
from cloudtap.errors import CloudtapError

agent_app = typer.Typer(help="The capture agent that runs on each hypervisor host.", no_args_is_help=True)
DEFAULT_URL = "http://127.0.0.1:9477"


def check_raw_socket_permission() -> None:
    """Fail early, and say why, when this process may not open packet sockets."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError as exc:
        raise CloudtapError(
            "live capture needs root or CAP_NET_RAW (e.g. setcap cap_net_raw+ep, or systemd "
            "AmbientCapabilities=CAP_NET_RAW); use --replay FILE to try the agent without it"
        ) from exc


@agent_app.command("run")
def run_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="agent YAML config")] = None,
    replay: Annotated[Path | None, typer.Option(help="replay this capture instead of capturing live")] = None,
    speed: Annotated[str, typer.Option(help="replay speed: max, or a factor such as 1 or 10x")] = "max",
    stay: Annotated[
        bool, typer.Option(help="after a replay, keep running (serve packets, heartbeat) until stopped")
    ] = False,
    output: Annotated[Path | None, typer.Option(help="output directory (overrides the config)")] = None,
    port: Annotated[
        int | None, typer.Option(help="control endpoint port (overrides the config; 0 = any)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log at INFO")] = False,
) -> None:
    """Run the agent in the foreground until SIGTERM/SIGINT (stops within a second)."""
    from cloudtap.agent.config import load_agent_config
    from cloudtap.agent.lean import keep_pandas_out
    from cloudtap.agent.runner import Agent

    keep_pandas_out()  # this process is only an agent: pyarrow need not load pandas (~50 MiB)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s"
    )
    err = Console(stderr=True)
    try:
        cfg = load_agent_config(config)
        updates: dict[str, Any] = {}
        if replay is not None:
            factor = None if speed in ("max", "") else float(speed.rstrip("x"))
            updates["capture"] = cfg.capture.model_copy(
                update={"mode": "replay", "replay_file": replay, "replay_speed": factor, "replay_stay": stay}
            )
        if output is not None:
            updates["output"] = cfg.output.model_copy(update={"directory": output})
        if port is not None:
            updates["control"] = cfg.control.model_copy(update={"port": port})
        cfg = cfg.model_copy(update=updates)
        if cfg.capture.mode != "replay":
            check_raw_socket_permission()
        agent = Agent(cfg)
    except (CloudtapError, ValueError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    signal.signal(signal.SIGTERM, lambda *_: agent.shutdown())
    signal.signal(signal.SIGINT, lambda *_: agent.shutdown())
    agent.start()
    err.print(f"agent [bold]{agent.agent_id}[/] running ({cfg.capture.mode}); control at {agent.control.url}")
    agent.run()
    status = agent.status()
    err.print(
        f"stopped: {status.captured_packets:,} packets, {status.records:,} records, "
        f"wire reduction {status.wire_reduction:,.0f}:1, kernel drops {status.kernel_drops:,}"
    )


def _call(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] no agent answering at {url}: {exc}")
        raise typer.Exit(1) from exc


@agent_app.command("status")
def status_command(
    url: Annotated[str, typer.Option(help="agent control endpoint")] = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="raw JSON")] = False,
) -> None:
    """Show a running agent's counters, interfaces and health."""
    s = _call(url.rstrip("/") + "/status")
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    console = Console()
    state = "[green]capturing[/]" if s["capturing"] else f"[yellow]paused[/] ({'; '.join(s['paused_by'])})"
    console.print(f"[bold]{s['agent_id']}[/] · {s['mode']} · {state} · up {s['uptime_s']:.0f} s")
    console.print(
        f"captured {s['captured_packets']:,} packets / {human_bytes(s['captured_bytes'])} · "
        f"records {s['records']:,} ({human_bytes(s['record_bytes'])}, reduction {s['wire_reduction']:,.0f}:1) · "
        f"flows {s['active_flows']:,}/{s['flow_table_capacity']:,}"
    )
    console.print(
        f"drops: kernel {s['kernel_drops']:,} · pps cap {s['pps_limit_drops']:,} · table full {s['meter_drops']:,}"
        f" · filter {s['filter_drops']:,} · duplicates {s['duplicates']:,}"
    )
    console.print(
        f"cpu {s['cpu_percent']:.0f}% · rss {human_bytes(s['rss_bytes'])} · host load {s['load1']:.2f}"
    )
    table = Table(title="interfaces", header_style="bold cyan")
    for col in ("interface", "VM", "packets", "kernel drops"):
        table.add_column(col)
    for name, c in sorted(s["interfaces"].items()):
        table.add_row(
            name, c.get("vm_domain") or "-", f"{c.get('packets', 0):,}", f"{c.get('kernel_drops', 0):,}"
        )
    console.print(table)
    for e in s.get("errors", []):
        console.print(f"[red]error:[/] {e}")


@agent_app.command("start")
def start_command(url: Annotated[str, typer.Option(help="agent control endpoint")] = DEFAULT_URL) -> None:
    """Start capture on a running agent."""
    typer.echo(json.dumps(_call(url.rstrip("/") + "/capture/start", "POST")))


@agent_app.command("stop")
def stop_command(url: Annotated[str, typer.Option(help="agent control endpoint")] = DEFAULT_URL) -> None:
    """Stop capture on a running agent (it keeps running and answering)."""
    typer.echo(json.dumps(_call(url.rstrip("/") + "/capture/stop", "POST")))


@agent_app.command("config")
def config_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="check this file")] = None,
) -> None:
    """Print the default configuration with every key documented, or validate a file."""
    from cloudtap.agent.config import documented_defaults, load_agent_config

    if config is None:
        typer.echo(documented_defaults(), nl=False)
        return
    try:
        cfg = load_agent_config(config)
    except CloudtapError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
