"""`make demo`: synthesise a small cloud with an hourly backup incident, meter it, show what it found.

Run as ``python -m cloudtap.demo [--out DIR]``. Until the server exists this is the main job on
embedded defaults: scenario -> pcap -> flows (+ 1-minute edges) -> the top talkers and the burst.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.compute as pc
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from cloudtap.cli.meter_cmd import summary_line
from cloudtap.cli.render import human_bytes, make_console, top_flows_table
from cloudtap.meter import edges_with_text, meter_file
from cloudtap.synth import builtin_scenario, write_pcap


def _minute_table(edges_1m, console_width: int) -> Table:  # type: ignore[no-untyped-def]
    """Bytes per minute on the busiest edge: the hourly burst stands out."""
    busiest = (
        edges_1m.group_by(["client_ip", "server_ip", "server_port"], use_threads=False)
        .aggregate([("bytes_c2s", "sum")])
        .sort_by([("bytes_c2s_sum", "descending")])
        .slice(0, 1)
        .to_pylist()[0]
    )
    mask = pc.and_(
        pc.equal(edges_1m["client_ip"], busiest["client_ip"]),
        pc.and_(pc.equal(edges_1m["server_ip"], busiest["server_ip"]),
                pc.equal(edges_1m["server_port"], busiest["server_port"])),
    )  # fmt: skip
    rows = edges_1m.filter(mask).sort_by("time_ns").to_pylist()
    peak = max(r["bytes_c2s"] for r in rows) or 1
    table = Table(
        title=f"Busiest edge {busiest['client_ip']} → {busiest['server_ip']}:{busiest['server_port']}, bytes per minute",
        header_style="bold cyan",
    )
    table.add_column("minute (UTC)")
    table.add_column("bytes c→s", justify="right")
    table.add_column("", min_width=30)
    import datetime as dt

    for r in rows[:40]:
        t = dt.datetime.fromtimestamp(r["time_ns"] / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M")
        bar = "█" * max(1, int(30 * r["bytes_c2s"] / peak))
        table.add_row(t, human_bytes(r["bytes_c2s"]), f"[magenta]{bar}[/]")
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="where the pcap and outputs go")
    parser.add_argument("--scenario", default="small-cloud", help="built-in scenario name")
    args = parser.parse_args(argv)
    console = make_console()
    args.out.mkdir(parents=True, exist_ok=True)
    pcap = args.out / f"{args.scenario}.pcap"
    console.print(
        Panel.fit("[bold]cloudtap demo[/]: a small private cloud, one hour-on-the-hour backup incident")
    )
    scenario = builtin_scenario(args.scenario)
    with Progress(TextColumn("synthesising"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                  console=console, transient=True) as bar:  # fmt: skip
        task = bar.add_task("synth", total=1)
        synth = write_pcap(scenario, pcap, progress=lambda d, t: bar.update(task, completed=d, total=t))
    console.print(f"wrote [cyan]{pcap}[/]: {synth.packets:,} packets, {synth.flows:,} flows")
    result = meter_file(pcap)
    console.print(summary_line(result))
    flows = result.to_arrow()
    console.print(top_flows_table(flows, limit=10))
    edges = edges_with_text(result.edges(60.0))
    console.print(_minute_table(edges, console.width))
    out_flows = args.out / "flows.parquet"
    import pyarrow.parquet as pq

    pq.write_table(flows, out_flows, compression="zstd")
    console.print(
        f"flow records: [cyan]{out_flows}[/]; try: [bold].venv/bin/cloudtap meter {pcap} --format jsonl[/]"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
