"""`cloudtap agent ...`: run the agent, and talk to a running one.

``status``, ``start`` and ``stop`` talk to the agent's Unix socket (``--socket``, default
``/run/cloudtap/agent.sock``: root only, no key) when it exists and no ``--url`` is given; else to its
TCP control endpoint with a key: ``--key-file`` (a file holding the key, or the agent's credential file),
by default the agent's credential file ``/var/lib/cloudtap/agent-credential.json`` when readable.
``run`` exits with the agent's exit status (0 when stopped by a signal; 75 when asked to restart).
"""

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
DEFAULT_SOCKET = Path("/run/cloudtap/agent.sock")
DEFAULT_CREDENTIAL = Path("/var/lib/cloudtap/agent-credential.json")
SocketOpt = Annotated[
    Path, typer.Option("--socket", help="the agent's Unix socket (used when it exists and no --url)")
]
UrlOpt = Annotated[
    str | None, typer.Option(help=f"agent TCP control endpoint (default {DEFAULT_URL} without a socket)")
]
KeyOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="control key file, or the agent's credential file (TCP only)"),
]


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
    signal.signal(signal.SIGTERM, lambda *_: agent.shutdown())  # asked to stop: exit 0, not restarted
    signal.signal(signal.SIGINT, lambda *_: agent.shutdown())
    agent.start()
    err.print(
        f"agent [bold]{agent.agent_id}[/] running ({cfg.capture.mode}); control at {agent.control_url or 'none'}"
    )
    agent.run()
    status = agent.status()
    err.print(
        f"stopped: {status.captured_packets:,} packets, {status.records:,} records, "
        f"wire reduction {status.wire_reduction:,.0f}:1, kernel drops {status.kernel_drops:,}"
    )
    if agent.exit_code:
        raise typer.Exit(agent.exit_code)


def read_key(path: Path) -> str:
    """The control key in ``path``: the agent's credential file (JSON, ``control_key``) or a plain key file."""
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("{"):
        try:
            return str(json.loads(text)["control_key"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is JSON without a control_key") from exc
    return text


def _key(key_file: Path | None) -> str | None:
    path = key_file or (DEFAULT_CREDENTIAL if DEFAULT_CREDENTIAL.is_file() else None)
    if path is None:
        return None
    try:
        return read_key(path)
    except (OSError, ValueError) as exc:
        if key_file is None:
            return None  # the default file is only a convenience
        Console(stderr=True).print(f"[bold red]error:[/] cannot read the control key: {exc}")
        raise typer.Exit(1) from exc


def _call(path: str, method: str = "GET", url: str | None = None, sock: Path = DEFAULT_SOCKET,
          key_file: Path | None = None) -> Any:  # fmt: skip
    """One call to the agent's control endpoint: its Unix socket when there (and no ``url``), else TCP with a key."""
    err = Console(stderr=True)
    body = b"" if method == "POST" else None
    if url is None and sock.exists():
        from cloudtap.agent.control_socket import UnixHTTPConnection

        conn = UnixHTTPConnection(sock, timeout=3)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            status, data = resp.status, resp.read()
        except PermissionError as exc:
            err.print(
                f"[bold red]error:[/] cannot open {sock}: it is root's (run as root, or give --url and --key-file)"
            )
            raise typer.Exit(1) from exc
        except OSError as exc:
            err.print(f"[bold red]error:[/] no agent answering on {sock}: {exc}")
            raise typer.Exit(1) from exc
        finally:
            conn.close()
        return _answer(status, data, str(sock))
    base = (url or DEFAULT_URL).rstrip("/")
    key = _key(key_file)
    req = urllib.request.Request(base + path, method=method, data=body)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return _answer(exc.code, exc.read(), base)
    except (urllib.error.URLError, OSError) as exc:
        err.print(f"[bold red]error:[/] no agent answering at {base} (nor on {sock}): {exc}")
        raise typer.Exit(1) from exc


def _answer(status: int, data: bytes, where: str) -> Any:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {"error": data.decode(errors="replace")[:300]}
    if status == 200:
        return doc
    reason = doc.get("error", doc) if isinstance(doc, dict) else doc
    hint = " (give --key-file, or run as root to use the agent's Unix socket)" if status == 401 else ""
    Console(stderr=True).print(f"[bold red]error:[/] the agent at {where} answered {status}: {reason}{hint}")
    raise typer.Exit(1)


@agent_app.command("status")
def status_command(
    url: UrlOpt = None,
    sock: SocketOpt = DEFAULT_SOCKET,
    key_file: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="raw JSON")] = False,
) -> None:
    """Show a running agent's counters, interfaces and health."""
    s = _call("/status", "GET", url, sock, key_file)
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
def start_command(url: UrlOpt = None, sock: SocketOpt = DEFAULT_SOCKET, key_file: KeyOpt = None) -> None:
    """Start capture on a running agent."""
    typer.echo(json.dumps(_call("/capture/start", "POST", url, sock, key_file)))


@agent_app.command("stop")
def stop_command(url: UrlOpt = None, sock: SocketOpt = DEFAULT_SOCKET, key_file: KeyOpt = None) -> None:
    """Stop capture on a running agent (it keeps running and answering)."""
    typer.echo(json.dumps(_call("/capture/stop", "POST", url, sock, key_file)))


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
