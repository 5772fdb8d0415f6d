"""Whole-process benchmark: `cloudtap meter F --format X`, start-up and writing included, vs the others.

Usage: python bench/meter/whole_process.py [--pcap F | --scenario bench --packets N] [--out DIR]
       [--runs 3] [--formats jsonl,csv,parquet,table] [--baseline SRC] [--quick]

Runs, round-robin in one run and pinned to one core: the ``cloudtap`` console script for every
output format, ``softflowd -r F`` -> nfcapd, ``nfpcapd``, NFStream (process wall time) and the read
floor ``tcpdump -r F -w /dev/null``; then the same cloudtap commands on a 1-packet capture
(start-up). ``--baseline SRC`` adds the same commands run from another source tree (e.g. a
``git archive HEAD src`` export) so before/after compare in the same run. Prints ratios and writes
<out>/meter_whole_process.json. Ratios above 1 in "x softflowd" mean cloudtap is faster.

Each run records wall time and CPU time (user + system of the process and its children). On a
quiet host they agree; on a shared one the wall time also counts time other processes held the
pinned core, so the CPU ratio ("x softflowd cpu") is the one to compare across busy runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _capture import bench_capture  # noqa: E402
from _procs import pinned, run_measured, usable_cores  # noqa: E402
from _tools import TOOLS as _ALL_TOOLS  # noqa: E402
from _tools import Context, child_env, missing_reason, run_nfpcapd, run_nfstream, run_softflowd, run_tcpdump  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

REPO = HERE.parents[1]
FORMATS = ("jsonl", "csv", "parquet", "table")
TARGET_VS_SOFTFLOWD = 2.0
TARGET_STARTUP_S = 0.5
Runner = Callable[[int], tuple[float, float | None]]  # run i -> (wall s, CPU s or None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--scenario", default="bench", help="built-in scenario name or YAML path")
    ap.add_argument("--packets", type=int, default=None, help="rescale the scenario to ~N packets")
    ap.add_argument("--pcap", type=Path, default=None, help="benchmark this capture instead")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tmp", help="results + cache")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per command (best is kept)")
    ap.add_argument("--formats", default=",".join(FORMATS), help="cloudtap output formats")
    ap.add_argument("--baseline", type=Path, default=None, help="src dir of a cloudtap to compare against")
    ap.add_argument("--quick", action="store_true", help="~20k packets, one run")
    ap.add_argument("--timeout", type=float, default=600.0)
    return ap.parse_args(argv)


def one_packet_capture(pcap: Path, work: Path) -> Path:
    """The first packet of ``pcap`` as its own capture (start-up measurements)."""
    out = work / "one-packet.pcap"
    subprocess.run(["tcpdump", "-r", str(pcap), "-c", "1", "-w", str(out)], capture_output=True, check=True)
    return out


def cloudtap_runner(ctx: Context, pcap: Path, fmt: str, label: str, src: Path | None) -> Runner:
    """Time the console script (``PYTHONPATH=src`` when given) metering ``pcap`` into ``fmt``."""
    script = Path(sys.executable).parent / "cloudtap"
    env = {**ctx.env, **({"PYTHONPATH": str(src)} if src else {})}
    out = ctx.work / f"out-{label}.{fmt}"

    def run(i: int) -> tuple[float, float | None]:
        cmd = pinned([str(script), "meter", str(pcap), "--format", fmt, "-o", str(out)], ctx.core)
        proc = run_measured(cmd, ctx.work / "logs", f"{label}-{fmt}-{i}", ctx.timeout_s, env)
        proc.check(f"cloudtap {label} {fmt}")
        return proc.seconds, proc.cpu_seconds

    return run


def numba_floor_runner(ctx: Context) -> Runner:
    """Python + ``import numba`` + the first call of one cached kernel: what any numba CLI pays."""
    mod = ctx.work / "numba_floor_kernel.py"
    mod.write_text("from numba import njit\n\n@njit(cache=True, nogil=True)\ndef f(x):\n    return x + 1\n")
    cmd = pinned([sys.executable, "-c", "import numba_floor_kernel as k; k.f(1)"], ctx.core)

    def run(i: int) -> tuple[float, float | None]:
        proc = run_measured(cmd, ctx.work / "logs", f"numba-floor-{i}", ctx.timeout_s, ctx.env, cwd=ctx.work)
        return proc.check("numba floor").seconds, proc.cpu_seconds

    run(-1)  # compile into the cache
    return run


def contenders(args: argparse.Namespace, ctx: Context, one: Path) -> dict[str, Runner]:
    """Every timed command by name; unavailable tools are left out."""
    formats = [f for f in args.formats.split(",") if f]
    runs: dict[str, Runner] = {}
    for label, src in (("cloudtap", None), ("baseline", args.baseline)):
        if label == "baseline" and src is None:
            continue
        for fmt in formats:
            runs[f"{label} {fmt}"] = cloudtap_runner(ctx, ctx.pcap, fmt, label, src)
            runs[f"{label} {fmt} (1 packet)"] = cloudtap_runner(ctx, one, fmt, f"{label}-one", src)
    tools = {t.name: t for t in _ALL_TOOLS}
    external: dict[str, Callable[[Context, int], Any]] = {
        "softflowd": run_softflowd, "nfpcapd": run_nfpcapd, "nfstream": run_nfstream, "tcpdump": run_tcpdump,
    }  # fmt: skip
    for name, fn in external.items():
        if missing_reason(tools[name]) is None:
            runs[name] = (
                (lambda i, fn=fn: (float(fn(ctx, i).extra["process_wall_s"]), None))
                if name == "nfstream"
                else (lambda i, fn=fn: _wall_cpu(fn(ctx, i)))
            )
    runs["numba floor (import + 1 cached kernel)"] = numba_floor_runner(ctx)
    return runs


def _wall_cpu(sample: Any) -> tuple[float, float | None]:
    cpu = sample.extra.get("cpu_s")
    return float(sample.seconds), float(cpu) if cpu is not None else None


def measure(runs: dict[str, Runner], n: int, console: Console) -> dict[str, dict[str, Any]]:
    """Warm every command once (numba cache, page cache), then ``n`` round-robin timed runs."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    errors: dict[str, str] = {}
    for i in range(-1, n):
        for name, run in runs.items():
            if name in errors:
                continue
            with console.status(f"{'warm-up' if i < 0 else f'run {i + 1}/{n}'}: {name}"):
                try:
                    seconds, cpu = run(i if i >= 0 else 99)
                except (RuntimeError, OSError, ValueError, KeyError) as exc:
                    errors[name] = str(exc)
                    continue
            if i >= 0:
                samples[name].append(seconds)
                if cpu is not None:
                    cpus[name].append(cpu)
    return {
        name: {"runs_s": got, "seconds": min(got) if got else None, "cpu_runs_s": cpus[name],
               "cpu_s": min(cpus[name]) if cpus[name] else None, "error": errors.get(name)}
        for name, got in samples.items()
    }  # fmt: skip


def ratios(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cloudtap command: time, and how it compares with the others (whole process)."""
    best = {k: v["seconds"] for k, v in results.items() if v["seconds"]}
    cpu = {k: v["cpu_s"] for k, v in results.items() if v.get("cpu_s")}
    rows = []
    for name, seconds in best.items():
        if not name.startswith(("cloudtap", "baseline")):
            continue
        row: dict[str, Any] = {"command": name, "seconds": seconds, "cpu_s": cpu.get(name)}
        if "(1 packet)" not in name:
            for other in ("softflowd", "nfpcapd", "nfstream"):
                row[f"x_{other}"] = best[other] / seconds if other in best else None
            row["x_softflowd_cpu"] = (
                cpu["softflowd"] / cpu[name] if "softflowd" in cpu and name in cpu else None
            )
            row["x_read_floor"] = seconds / best["tcpdump"] if "tcpdump" in best else None
        rows.append(row)
    return rows


def report(doc: dict[str, Any], console: Console) -> None:
    packets = doc["capture"]["packets"]
    what = f"{packets:,} packets" if packets else Path(doc["capture"]["path"]).name
    table = Table(title=f"cloudtap meter, whole process · {what} (best of runs)")
    columns = ("command", "seconds", "cpu s", "× softflowd", "× softflowd cpu", "× nfpcapd", "× nfstream",
               "÷ tcpdump floor", "target")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "command" else "right")
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else "-"  # noqa: E731
    for row in doc["ratios"]:
        if "(1 packet)" in row["command"]:
            target = "ok" if row["seconds"] < TARGET_STARTUP_S else f"> {TARGET_STARTUP_S} s"
        else:
            x = row.get("x_softflowd_cpu") or row.get("x_softflowd")
            target = "-" if x is None else ("ok" if x >= TARGET_VS_SOFTFLOWD else f"< {TARGET_VS_SOFTFLOWD}×")
        table.add_row(row["command"], f"{row['seconds']:.3f}", fmt(row.get("cpu_s")), fmt(row.get("x_softflowd")),
                      fmt(row.get("x_softflowd_cpu")), fmt(row.get("x_nfpcapd")), fmt(row.get("x_nfstream")),
                      fmt(row.get("x_read_floor")), target)  # fmt: skip
    console.print(table)
    others = {k: v for k, v in doc["results"].items() if not k.startswith(("cloudtap", "baseline"))}
    for name, res in others.items():
        shown = f"{res['seconds']:.3f} s" if res["seconds"] else f"error: {res['error']}"
        shown += f" (cpu {res['cpu_s']:.3f} s)" if res.get("cpu_s") else ""
        console.print(f"  {name}: {shown}")
    console.print(f"load average at start/end: {doc['loadavg']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    console = Console(width=max(140, Console().width))
    if args.pcap is not None:
        capture = {"path": str(args.pcap.resolve()), "packets": None}
    else:
        packets = 20_000 if args.quick and args.packets is None else args.packets
        with console.status("synthesising the capture (cloudtap synth)..."):
            capture = bench_capture(args.scenario, packets, args.out).to_json()
    cores = usable_cores()
    ctx = Context(pcap=Path(capture["path"]), work=args.out / "work-whole", core=cores[0],
                  side_core=cores[1] if len(cores) > 1 else cores[0], env=child_env(),
                  timeout_s=args.timeout)  # fmt: skip
    (ctx.work / "logs").mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {ctx.side_core})
    one = one_packet_capture(ctx.pcap, ctx.work)
    loadavg = [os.getloadavg()]
    results = measure(contenders(args, ctx, one), 1 if args.quick else args.runs, console)
    loadavg.append(os.getloadavg())
    doc = {"capture": {**capture, "packets": capture["packets"] or 0}, "results": results,
           "ratios": ratios(results), "loadavg": loadavg, "baseline": str(args.baseline or "")}  # fmt: skip
    report(doc, console)
    out = args.out / "meter_whole_process.json"
    out.write_text(json.dumps(doc, indent=2, default=str))
    console.print(f"results: {out}")
    return 1 if any(r["error"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
