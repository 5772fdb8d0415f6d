"""Benchmark: flow metering with application-request parsing vs L4-only metering, and vs tshark.

Usage: python bench/meter/l7.py [--repeat N] [--runs 3] [--pcap F ...] [--no-tshark]

The mixed input is one pcapng built with ``mergecap -a`` (in a temporary directory) from every
shared capture whose MANIFEST lists http, dns, mysql, pgsql or redis, ``--repeat`` times, followed by
any ``--pcap`` given (e.g. the synthesised ``bench/results/tmp/capture-bench-*.pcap`` for mostly-L4
traffic). In the same run, on that one file, it times (best of ``--runs``):

* ``l4``: ``meter_file`` (read, decode, meter),
* ``l4+l7``: the same pipeline with :class:`RequestParser` on the same decoded rows,
* ``tshark``: ``tshark -T fields`` extracting the same request fields (HTTP method/uri/status/time,
  DNS name/type/rcode/time, MySQL/PostgreSQL/Redis commands), once.

It prints packets per second and the ratios ``l4+l7 / l4`` (goal >= 0.70) and ``l4+l7 / tshark``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
PCAPS = REPO.parent / "shared" / "pcaps"
PROTOCOLS = {"http", "dns", "mysql", "pgsql", "redis"}
TSHARK_FIELDS = (
    "http.request.method", "http.request.uri", "http.response.code", "http.time", "dns.qry.name", "dns.qry.type",
    "dns.flags.rcode", "dns.time", "mysql.command", "mysql.query", "mysql.error_code", "pgsql.type", "pgsql.query",
    "resp.bulk_string.value", "pgsql.code",
)  # fmt: skip


def l7_captures() -> list[Path]:
    out = []
    with open(PCAPS / "MANIFEST.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if PROTOCOLS & set(row["protocols"].split(",")) and (PCAPS / row["path"]).is_file():
                out.append(PCAPS / row["path"])
    return out


def best(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def run_tshark(path: Path) -> tuple[float, int]:
    """Seconds and output lines (one per L7 message tshark dissected)."""
    fields = [a for f in TSHARK_FIELDS for a in ("-e", f)]
    started = time.perf_counter()
    res = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "http or dns or mysql or pgsql or resp", "-T", "fields", *fields],
        capture_output=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - started, res.stdout.count(b"\n")


def build_mixed(files: list[Path], repeat: int, extra: list[Path], out: Path) -> Path:
    """One pcapng: ``files`` concatenated, that ``repeat`` times (shifted by a day each), then ``extra``."""
    once = out / "l7-once.pcapng"
    subprocess.run(["mergecap", "-a", "-F", "pcapng", "-w", str(once), *map(str, files)], check=True)
    parts = []
    for k in range(repeat):  # each copy a day later: its flows are new to both meters
        part = out / f"l7-{k}.pcapng"
        subprocess.run(["editcap", "-t", str(k * 86400), str(once), str(part)], check=True)
        parts.append(str(part))
    parts += [str(p) for p in extra]
    mixed = out / "l7-mixed.pcapng"
    subprocess.run(["mergecap", "-a", "-F", "pcapng", "-w", str(mixed), *parts], check=True)
    return mixed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="times the L7 captures are read in one stream")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pcap", type=Path, action="append", default=[], help="extra capture(s) in the stream")
    ap.add_argument("--no-tshark", action="store_true")
    args = ap.parse_args(argv)
    console = Console()
    if not (PCAPS / "MANIFEST.csv").is_file():
        console.print(f"[red]no shared captures at {PCAPS}[/]")
        return 2
    import tempfile

    from cloudtap.l7 import parse_file
    from cloudtap.meter import MeterConfig, meter_file

    base = l7_captures()
    with tempfile.TemporaryDirectory(prefix="cloudtap-l7-bench-") as tmp:
        mixed = build_mixed(base, args.repeat, list(args.pcap), Path(tmp))
        config = MeterConfig(max_flows=1 << 18)
        parse_file(base[:3], meter=True, meter_config=config)  # load kernels from the cache / compile
        meter_file(base[:3], config)
        t_l4, r_l4 = best(lambda: meter_file(mixed, config), args.runs)
        t_l7, r_l7 = best(lambda: parse_file(mixed, meter=True, meter_config=config), args.runs)
        t_ts, ts_lines = run_tshark(mixed) if not args.no_tshark and shutil.which("tshark") else (None, 0)
    packets = r_l4.frames  # type: ignore[attr-defined]
    requests = len(r_l7.requests)  # type: ignore[attr-defined]
    title = f"L7 parsing: {len(base)} captures x {args.repeat} + {len(args.pcap)} extra · {packets:,} packets"
    table = Table(title=title)
    for col in ("run", "seconds", "Mpps", "requests", "time vs l4+l7"):
        table.add_column(col, justify="right" if col != "run" else "left")
    table.add_row("l4 (meter_file)", f"{t_l4:.3f}", f"{packets / t_l4 / 1e6:.3f}", "-", f"{t_l4 / t_l7:.2f}")
    table.add_row("l4+l7 (parse_file)", f"{t_l7:.3f}", f"{packets / t_l7 / 1e6:.3f}", f"{requests:,}", "1.00")
    ratio = t_l4 / t_l7
    if t_ts is not None:
        table.add_row(
            "tshark -T fields",
            f"{t_ts:.3f}",
            f"{packets / t_ts / 1e6:.3f}",
            f"{ts_lines:,} frames",
            f"{t_ts / t_l7:.1f}",
        )
    console.print(table)
    console.print(f"l4+l7 rate / l4-only rate = [bold]{ratio:.2f}[/] (goal >= 0.70)")
    if t_ts is not None:
        console.print(f"l4+l7 rate / tshark rate = [bold]{t_ts / t_l7:.1f}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
