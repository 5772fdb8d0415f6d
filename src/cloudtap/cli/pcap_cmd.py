"""`cloudtap pcap`: retrieve the stored packets of a VM (or of registered agents) as one pcapng file.

The server asks only agents it registered, at the addresses they registered, and audits every
retrieval under the caller's login (``pcap:read`` needed); ``--agent ID[:iface,iface]`` names agents
by id or name, never by URL.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudtap.cli.errors import CliError
from cloudtap.cli.render import human_bytes, make_console
from cloudtap.cli.server_client import ServerError
from cloudtap.cli.server_options import CaOpt, Remote, ServerOpt, TokenOpt

EXIT_TOO_LARGE = 3


def parse_agent(spec: str) -> dict[str, Any]:
    """``ID[:iface,iface...]`` -> ``{"agent": ID, "interfaces": [...]}`` (no interfaces: all of them)."""
    agent, _, ifaces = spec.partition(":")
    if not agent or "/" in spec:
        raise CliError(f"--agent {spec!r}: give an agent id or name, optionally :iface,iface (not a URL)", 2)
    return {"agent": agent, "interfaces": [i for i in ifaces.split(",") if i]}


def _progress(console: Any) -> Progress:
    return Progress(
        TextColumn("[bold]pcap"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=False,
    )


def download(
    remote: Remote, body: dict[str, Any], output: Path, console: Any, quiet: bool
) -> tuple[int, int]:
    """POST /api/v1/pcap and stream the answer to ``output`` (via ``output.part``): ``(packets, bytes)``."""
    tmp = output.with_name(output.name + ".part")
    size = 0
    try:
        with remote.client(timeout_s=600).stream("POST", "/api/v1/pcap", body) as answer:
            total = answer.length
            packets = int(answer.headers.get("X-Cloudtap-Packets") or 0)
            with _progress(console) as bar, tmp.open("wb") as f:
                task = bar.add_task("pcap", total=total, visible=not quiet)
                for chunk in answer.chunks():
                    f.write(chunk)
                    size += len(chunk)
                    bar.update(task, completed=size)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if total is not None and size != total:
        tmp.unlink(missing_ok=True)
        raise CliError(f"the transfer stopped after {size} of {total} bytes")
    os.replace(tmp, output)
    return packets, size


def pcap_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="pcapng file to write")],
    time_from: Annotated[str, typer.Option("--from", help="window start: ISO 8601, epoch, or -1h")],
    time_to: Annotated[str, typer.Option("--to", help="window end (default now)")] = "now",
    vm: Annotated[
        str | None, typer.Option("--vm", help="VM whose packets to fetch (the server finds the agents)")
    ] = None,
    bpf: Annotated[str | None, typer.Option("--filter", help="tcpdump filter applied on the agents")] = None,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent", help="registered agent id or name[:iface,iface]; repeat for several (instead of --vm)"
        ),
    ] = None,
    max_bytes: Annotated[
        int | None, typer.Option("--max-bytes", help="size cap of the file (server cap applies)")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Retrieve stored packets as one pcapng (merged by time, one interface per capture point); audited."""
    console = make_console(stderr=True)
    started = time.perf_counter()
    try:
        if not vm and not agent:
            raise CliError("give --vm or at least one --agent", 2)
        body: dict[str, Any] = {"from": time_from, "to": time_to, "filter": bpf, "max_bytes": max_bytes}
        if vm:
            body["vm"] = vm
        if agent:
            body["agents"] = [parse_agent(a) for a in agent]
        packets, size = download(Remote(server, token, ca), body, output, console, quiet)
    except ServerError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_TOO_LARGE if exc.status == 413 else exc.code) from exc
    except CliError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(exc.code) from exc
    console.print(
        f"wrote {output}: {packets} packets, {human_bytes(size)} in {time.perf_counter() - started:.2f} s"
    )
