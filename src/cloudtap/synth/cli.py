"""``cloudtap synth``: write a synthetic pcap (plus inventory and, optionally, ground truth)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cloudtap.errors import CloudtapError
from cloudtap.synth.scenario import resolve_scenario, with_overrides
from cloudtap.synth.writer import inventory_path, write_pcap


def synth_command(
    scenario: Annotated[
        str, typer.Argument(help="built-in name (small-cloud, bench, seed-case) or YAML path")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="pcap file to write")],
    seed: Annotated[int | None, typer.Option("--seed", help="override the scenario's random seed")] = None,
    duration: Annotated[
        str | None, typer.Option("--duration", help="override the duration, e.g. 10m")
    ] = None,
    encapsulation: Annotated[
        str | None, typer.Option("--encap", help="override: none, vxlan, erspan2, gre-teb")
    ] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="timestamps: ns (default) or us")
    ] = None,
    snaplen: Annotated[
        int | None, typer.Option("--snaplen", help="truncate frames to this many bytes")
    ] = None,
    truth: Annotated[
        Path | None, typer.Option("--truth", help="also write the ground truth (.parquet or .csv)")
    ] = None,
    requests: Annotated[
        Path | None,
        typer.Option("--requests", help="also write the request ground truth (.parquet or .csv)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="no progress bar or summary")] = False,
    inventory: Annotated[
        Path | None, typer.Option("--inventory", help="also write the cloud as a static inventory (.yaml)")
    ] = None,
) -> None:
    """Synthesise realistic east-west traffic from a scenario into a pcap, with ground truth."""
    console = Console(stderr=True, quiet=quiet)
    try:
        scn = with_overrides(
            resolve_scenario(scenario),
            seed=seed,
            duration=duration,
            encapsulation=encapsulation,
            ts_precision=precision,
            snaplen=snaplen,
        )
        for option, target in (("--truth", truth), ("--requests", requests)):
            if target is not None and target.suffix.lower() not in (".parquet", ".csv"):
                raise CloudtapError(f"{option} {target}: use a .parquet or .csv file name")
        started = time.perf_counter()
        with Progress(
            TextColumn("[bold]synth[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{scn.name}: planning", total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(task, description=f"{scn.name}: frames", completed=done, total=total)

            result = write_pcap(scn, output, progress=on_progress)
        for target, table in ((truth, result.truth), (requests, result.requests)):
            if target is not None and table is not None:
                if target.suffix.lower() == ".csv":
                    pa_csv.write_csv(table, target)
                else:
                    pq.write_table(table, target)
        if inventory is not None:
            from cloudtap.synth.inventory import write_static_inventory

            write_static_inventory(scn, inventory)
    except CloudtapError as err:
        Console(stderr=True).print(f"[red]error:[/] {err}", highlight=False)
        raise typer.Exit(2) from None
    except OSError as err:
        Console(stderr=True).print(f"[red]error:[/] cannot write output: {err}", highlight=False)
        raise typer.Exit(1) from None
    elapsed = time.perf_counter() - started
    console.print(
        f"wrote [bold]{result.packets:,}[/] frames, [bold]{result.flows:,}[/] flows, "
        f"{result.bytes / 1e6:,.1f} MB to {result.path} in {elapsed:.1f} s "
        f"(cloud description: {inventory_path(result.path)}"
        + (f", static inventory: {inventory}" if inventory is not None else "")
        + (f", truth: {truth}" if truth else "")
        + (f", requests: {requests}" if requests else "")
        + ")",
        highlight=False,
    )
