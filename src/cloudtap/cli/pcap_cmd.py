"""`cloudtap pcap`: retrieve the stored packets of a VM (or of given agents) as one pcapng file."""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudtap.cli.render import human_bytes, make_console

DEFAULT_SERVER = "http://127.0.0.1:8470"
EXIT_TOO_LARGE = 3


def parse_agent(spec: str) -> dict[str, Any]:
    """``URL[#iface,iface...]`` -> a target (``{"url", "interfaces"}``)."""
    url, _, ifaces = spec.partition("#")
    return {"url": url, "interfaces": [i for i in ifaces.split(",") if i]}


def _progress(console: Any) -> Progress:
    return Progress(
        TextColumn("[bold]pcap"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=False,
    )


def _from_server(
    server: str, body: dict[str, Any], user: str, output: Path, console: Any, quiet: bool
) -> tuple[int, int]:
    import httpx

    url = server.rstrip("/") + "/api/v1/pcap"
    tmp = output.with_name(output.name + ".part")
    with httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0)) as client:
        with client.stream("POST", url, json=body, headers={"X-Cloudtap-User": user}) as response:
            if response.status_code != 200:
                response.read()
                try:
                    detail = response.json().get("detail", response.text)
                except ValueError:
                    detail = response.text
                code = (
                    EXIT_TOO_LARGE
                    if response.status_code == 413
                    else (2 if response.status_code in (400, 404, 422) else 1)
                )
                console.print(f"[red]error[/red] (HTTP {response.status_code}): {detail}")
                raise typer.Exit(code)
            total = int(response.headers.get("content-length") or 0) or None
            packets = int(response.headers.get("x-cloudtap-packets") or 0)
            size = 0
            with _progress(console) as bar, tmp.open("wb") as f:
                task = bar.add_task("pcap", total=total, visible=not quiet)
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
                    size += len(chunk)
                    bar.update(task, completed=size)
    if total is not None and size != total:
        tmp.unlink(missing_ok=True)
        console.print(f"[red]error[/red]: the transfer stopped after {size} of {total} bytes")
        raise typer.Exit(1)
    os.replace(tmp, output)
    return packets, size


def _local(body: dict[str, Any], output: Path, console: Any, quiet: bool) -> tuple[int, int]:
    from cloudtap.server.pcap import PcapError, PcapRequest, Target, retrieve_to_file
    from cloudtap.server.query.errors import QueryError
    from cloudtap.server.query.timespec import parse_instant

    now = time.time_ns()
    try:
        req = PcapRequest(
            from_ns=parse_instant(body["from"], now, "from"),
            to_ns=parse_instant(body["to"], now, "to"),
            targets=[Target(t["url"], tuple(t["interfaces"])) for t in body["targets"]],
            bpf=body.get("filter"),
            max_bytes=body.get("max_bytes") or (1 << 30),
        )
        with _progress(console) as bar:
            task = bar.add_task("pcap", total=None, visible=not quiet)
            return retrieve_to_file(req, output, progress=lambda n: bar.update(task, completed=n))
    except QueryError as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from exc
    except PcapError as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(EXIT_TOO_LARGE if exc.status == 413 else 1) from exc


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
        typer.Option("--agent", help="agent control URL[#iface,iface]; repeat for several (instead of --vm)"),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", envvar="CLOUDTAP_SERVER", help=f"server URL (default {DEFAULT_SERVER})"),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="who retrieves (audit log); default: login name")
    ] = None,
    max_bytes: Annotated[
        int | None, typer.Option("--max-bytes", help="size cap of the file (server cap applies)")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="fetch from the --agent URLs in this process, no server")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Retrieve stored packets as one pcapng (merged by time, one interface per capture point)."""
    console = make_console(stderr=True)
    if not vm and not agent:
        console.print("[red]error[/red]: give --vm or at least one --agent")
        raise typer.Exit(2)
    body: dict[str, Any] = {"from": time_from, "to": time_to, "filter": bpf, "max_bytes": max_bytes}
    if vm:
        body["vm"] = vm
    if agent:
        body["targets"] = [parse_agent(a) for a in agent]
    started = time.perf_counter()
    if local:
        if not agent:
            console.print("[red]error[/red]: --local needs --agent URLs")
            raise typer.Exit(2)
        packets, size = _local(body, output, console, quiet)
    else:
        try:
            who = user or getpass.getuser()
        except (KeyError, OSError):
            who = "unknown"
        import httpx

        try:
            packets, size = _from_server(server or DEFAULT_SERVER, body, who, output, console, quiet)
        except httpx.HTTPError as exc:
            console.print(f"[red]error[/red]: cannot reach the server: {exc}")
            raise typer.Exit(1) from exc
    console.print(
        f"wrote {output}: {packets} packets, {human_bytes(size)} in {time.perf_counter() - started:.2f} s"
    )
