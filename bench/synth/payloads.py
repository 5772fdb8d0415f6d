"""Benchmark: synthesising a capture with real application payloads vs zero-byte payloads, and vs editcap.

Usage: python bench/synth/payloads.py [--scenario seed-case] [--duration 30m] [--runs 3]

In the same run, on the same scenario (best of ``--runs``):

* ``apps``: ``write_pcap`` as the scenario declares it (HTTP, PostgreSQL, Redis, DNS messages built in
  numba, plus the request ground truth),
* ``fill``: the same scenario with every service's ``app`` set to ``none`` (zero-byte payloads, flow
  truth only),
* ``editcap``: the peer: Wireshark's ``editcap`` rewriting the ``apps`` capture (read + write of the same
  bytes in C), once.

It prints packets per second, MB per second and the ratios ``apps / fill`` and ``apps / editcap``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cloudtap.synth import write_pcap
from cloudtap.synth.scenario import resolve_scenario, scenario_from_dict, with_overrides


def _best(fn: object, runs: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        out = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best, out


def main() -> None:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="seed-case")
    ap.add_argument("--duration", default="30m")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    apps = with_overrides(resolve_scenario(args.scenario), duration=args.duration)
    data = apps.model_dump()
    for service in data["services"]:
        service["app"], service["templates"] = "none", None
    fill = scenario_from_dict(data, "fill")
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_pcap(apps, out / "warm.pcap")  # kernels from numba's cache (or compiled) before timing
        t_apps, made = _best(lambda: write_pcap(apps, out / "apps.pcap"), args.runs)
        t_fill, plain = _best(lambda: write_pcap(fill, out / "fill.pcap"), args.runs)
        rows = [("apps", t_apps, made), ("fill", t_fill, plain)]
        t_editcap = None
        if shutil.which("editcap"):
            started = time.perf_counter()
            subprocess.run(["editcap", str(out / "apps.pcap"), str(out / "copy.pcap")], check=True)
            t_editcap = time.perf_counter() - started
    table = Table(title=f"synth {apps.name} ({args.duration}): best of {args.runs}")
    for col in ("run", "packets", "MB", "s", "Mpkt/s", "MB/s", "requests"):
        table.add_column(col, justify="right")
    for name, secs, result in rows:
        n_req = result.requests.num_rows if result.requests is not None else 0  # type: ignore[union-attr]
        table.add_row(name, f"{result.packets:,}", f"{result.bytes / 1e6:,.0f}", f"{secs:.2f}",  # type: ignore[union-attr]
                      f"{result.packets / secs / 1e6:.2f}", f"{result.bytes / secs / 1e6:,.0f}", f"{n_req:,}")  # type: ignore[union-attr]  # fmt: skip
    if t_editcap is not None:
        table.add_row("editcap", f"{made.packets:,}", f"{made.bytes / 1e6:,.0f}", f"{t_editcap:.2f}",  # type: ignore[union-attr]
                      f"{made.packets / t_editcap / 1e6:.2f}", f"{made.bytes / t_editcap / 1e6:,.0f}", "")  # type: ignore[union-attr]  # fmt: skip
    console.print(table)
    console.print(f"apps / fill time: {t_apps / t_fill:.2f}x"
                  + (f"; apps vs editcap (rewriting the same file): {t_editcap / t_apps:.2f}x its speed"
                     if t_editcap else "; editcap not installed"))  # fmt: skip


if __name__ == "__main__":
    main()
