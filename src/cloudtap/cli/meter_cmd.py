"""`cloudtap meter`: capture files to flow records."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudtap.cli.output import FORMATS, write_flows

if TYPE_CHECKING:
    import numpy as np

    from cloudtap.meter import MeterResult

EXIT_PARTIAL = 3  #: some input was corrupt; flows before the damage were written

_PROGRESS_MIN_BYTES = 32 << 20


def summary_line(result: MeterResult) -> str:
    """One line: packets, flows, speed, and everything not metered or lost."""
    import numpy as np

    s = result.stats
    flows = len(np.unique(result.flows["flow_id"]))
    parts = [
        f"{result.frames:,} packets",
        f"{flows:,} flows ({len(result.flows):,} records)",
        f"{result.mpps:.2f} Mpps",
    ]
    skipped = {k: v for k, v in result.decoded.items() if k != "ok" and v}
    if skipped:
        parts.append("not metered: " + ", ".join(f"{v:,} {k}" for k, v in sorted(skipped.items())))
    if result.filtered_out:
        parts.append(f"{result.filtered_out:,} filtered out")
    if result.fragments_orphaned:
        parts.append(f"{result.fragments_orphaned:,} orphan fragments")
    if s.table_full_packets:
        parts.append(f"[bold red]{s.table_full_packets:,} packets lost: flow table full[/]")
    for err in result.errors:
        parts.append(f"[bold red]partial: {err}[/]")
    return " · ".join(parts)


def write_records(flows: np.ndarray, fmt: str, output: Path | None, limit: int) -> None:
    """Write flow records in ``fmt``; CSV by the row kernel (the bytes Arrow's writer gives, faster)."""
    if fmt != "csv":
        write_flows(flows, fmt, output, limit)
        return
    from cloudtap.meter.writers.csv import write_csv

    if output is None:
        sys.stdout.flush()
        write_csv(flows, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    with open(output, "wb") as fh:
        write_csv(flows, fh)


def meter_command(
    files: Annotated[list[Path], typer.Argument(help="pcap or pcapng files, metered in order as one stream")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"output: {', '.join(FORMATS)}, ipfix")
    ] = "table",
    bpf: Annotated[str | None, typer.Option("--filter", help="tcpdump (BPF) filter expression")] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="write records here (default stdout); ipfix: udp://HOST:PORT or tcp://…"
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="rows shown by --format table")] = 20,
    record_interval: Annotated[float, typer.Option(help="seconds between records of long flows")] = 60.0,
    idle_timeout: Annotated[
        float, typer.Option(help="idle timeout (s) of UDP/ICMP/unestablished TCP")
    ] = 60.0,
    tcp_idle_timeout: Annotated[float, typer.Option(help="idle timeout (s) of established TCP")] = 300.0,
    max_flows: Annotated[int, typer.Option(help="flow table capacity")] = 1 << 20,
    records: Annotated[
        str,
        typer.Option(
            "--records", help="flows, or l7: application requests (HTTP, DNS, MySQL, PostgreSQL, Redis)"
        ),
    ] = "flows",
) -> None:
    """Meter capture files into flow records with TCP health (RTT, retransmissions, close reason)."""
    from rich.console import Console

    from cloudtap.errors import CloudtapError
    from cloudtap.meter import MeterConfig, meter_file

    err = Console(stderr=True)
    if fmt not in FORMATS and fmt != "ipfix":
        err.print(f"[red]unknown --format {fmt!r}[/]; choose one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    if fmt == "ipfix":
        from cloudtap.ship.ipfix.exporter import exporter_for_cli

        try:
            ipfix = exporter_for_cli(str(output) if output is not None else "")
        except CloudtapError as exc:
            err.print(f"[red]--format ipfix:[/] {exc}")
            raise typer.Exit(2) from exc
    if fmt == "parquet" and output is None:
        err.print("[red]--format parquet needs --output PATH[/]")
        raise typer.Exit(2)
    for f in files:
        if not f.is_file():
            err.print(f"[red]no such file: {f}[/]")
            raise typer.Exit(2)
    if records not in ("flows", "l7") or (records == "l7" and fmt == "ipfix"):
        err.print(f"[red]--records {records!r}[/]: choose flows or l7 (l7 writes {', '.join(FORMATS)})")
        raise typer.Exit(2)
    if records == "l7":
        from cloudtap.l7 import parse_file, request_summary, write_requests

        try:
            parsed = parse_file(files, bpf=bpf)
        except CloudtapError as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(1) from exc
        write_requests(parsed.requests, fmt, output, limit)
        err.print(request_summary(parsed))
        raise typer.Exit(EXIT_PARTIAL if parsed.partial else 0)
    try:
        config = MeterConfig(
            record_interval_s=record_interval,
            idle_timeout_s=idle_timeout,
            tcp_idle_timeout_s=tcp_idle_timeout,
            max_flows=max_flows,
        )
    except ValueError as exc:
        err.print(f"[red]invalid option:[/] {exc}")
        raise typer.Exit(2) from exc
    total = sum(f.stat().st_size for f in files)
    try:
        if total >= _PROGRESS_MIN_BYTES and err.is_terminal:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            columns = (
                TextColumn("metering"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=err, transient=True) as bar:
                task = bar.add_task("meter", total=total)
                result = meter_file(
                    files, config, bpf=bpf, progress=lambda d, t: bar.update(task, completed=d), edges=False
                )
        else:
            result = meter_file(files, config, bpf=bpf, edges=False)  # the command writes records only
    except CloudtapError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if fmt == "ipfix":
        sent = ipfix.export(result.flows)
        c = ipfix.counters
        err.print(
            f"ipfix: {sent:,} records in {c.messages:,} messages to {ipfix.url}"
            + (f" · [bold red]{c.records_lost:,} lost: {c.last_error}[/]" if c.records_lost else "")
        )
        ipfix.close()
    else:
        write_records(result.flows, fmt, output, limit)
    err.print(summary_line(result))
    if fmt == "ipfix" and ipfix.counters.records_lost:
        raise typer.Exit(1)
    if result.partial:
        raise typer.Exit(EXIT_PARTIAL)
