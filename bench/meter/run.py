"""Benchmark: cloudtap's flow meter against softflowd, nfpcapd, NFStream and the tcpdump read floor.

Usage: python bench/meter/run.py [--scenario bench] [--packets N] [--pcap F] [--out DIR] [--runs 3] [--quick]

Synthesises the capture with ``cloudtap synth`` (cached in --out by scenario hash), runs every tool
pinned to one core (best of --runs, round-robin), prints a Rich table and writes <out>/meter.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _capture import bench_capture  # noqa: E402
from _procs import usable_cores  # noqa: E402
from _report import print_report, summarise  # noqa: E402
from _tools import FLOOR, TOOLS, Context, Sample, child_env, missing_reason, warm_cloudtap  # noqa: E402
from rich.console import Console  # noqa: E402

REPO = HERE.parents[1]
QUICK_PACKETS = 20_000
MIN_PACKETS, MIN_FLOWS = 1_000_000, 25_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--scenario", default="bench", help="built-in scenario name or YAML path (default: bench)"
    )
    ap.add_argument("--packets", type=int, default=None, help="rescale the scenario's duration to ~N packets")
    ap.add_argument(
        "--pcap", type=Path, default=None, help="benchmark this capture instead of synthesising one"
    )
    ap.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "tmp", help="results + capture cache"
    )
    ap.add_argument("--runs", type=int, default=None, help="timed runs per tool (default 3, --quick 1)")
    ap.add_argument(
        "--quick", action="store_true", help=f"smoke run: ~{QUICK_PACKETS:,} packets, one run each"
    )
    ap.add_argument("--tools", default=",".join(t.name for t in TOOLS), help="comma-separated subset")
    ap.add_argument("--timeout", type=float, default=600.0, help="per-process timeout in seconds")
    return ap.parse_args(argv)


def prepare_capture(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    if args.pcap is not None:
        from cloudtap.capture.pcap_file import CaptureFile

        with CaptureFile(args.pcap) as f:
            packets = sum(len(b) for b in f.batches())
        return {
            "path": str(args.pcap.resolve()),
            "scenario": "(given file)",
            "duration_s": 0.0,
            "key": "",
            "packets": packets,
            "flows_truth": None,
            "bytes": args.pcap.stat().st_size,
            "synth_seconds": 0.0,
            "cached": True,
        }
    packets = QUICK_PACKETS if args.quick and args.packets is None else args.packets
    with console.status("synthesising the capture (cloudtap synth)..."):
        capture = bench_capture(args.scenario, packets, args.out)
    if not args.quick and (capture.packets < MIN_PACKETS or capture.flows_truth < MIN_FLOWS):
        console.print(
            f"[yellow]warning:[/] capture has {capture.packets:,} packets / {capture.flows_truth:,} flows; "
            f"the benchmark wants >= {MIN_PACKETS:,} / {MIN_FLOWS:,}"
        )
    return {**capture.to_json()}


def run_all(args: argparse.Namespace, capture: dict[str, Any], console: Console) -> dict[str, dict[str, Any]]:
    cores = usable_cores()
    ctx = Context(
        pcap=Path(capture["path"]),
        work=args.out / "work",
        core=cores[0],
        side_core=cores[1] if len(cores) > 1 else cores[0],
        env=child_env(),
        timeout_s=args.timeout,
    )
    os.sched_setaffinity(0, {ctx.side_core})  # this driver stays off the measured core
    wanted = [t for t in TOOLS if t.name in set(args.tools.split(","))]
    results: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[Sample]] = {}
    for tool in wanted:
        reason = missing_reason(tool)
        results[tool.name] = {
            "available": reason is None,
            "reason": reason,
            "version": tool.version() if reason is None else "",
            "flow_unit": tool.flow_unit,
        }
        samples[tool.name] = []
    with ctx.pcap.open("rb") as fh:  # warm the page cache for everyone
        while fh.read(1 << 24):
            pass
    if results.get("cloudtap", {}).get("available"):
        with console.status("cloudtap warm-up (numba cache)..."):
            warm_cloudtap(ctx)
    runs = args.runs or (1 if args.quick else 3)
    for i in range(runs):  # round-robin, so drift hits every tool alike
        for tool in wanted:
            res = results[tool.name]
            if not res["available"] or res.get("error"):
                continue
            with console.status(f"run {i + 1}/{runs}: {tool.name}"):
                try:
                    samples[tool.name].append(tool.run(ctx, i))
                except (RuntimeError, OSError, ValueError, KeyError) as exc:
                    res["error"] = str(exc)
    for name, res in results.items():
        got = samples[name]
        if not got:
            continue
        best = min(got, key=lambda s: s.seconds)
        res.update(
            runs_s=[s.seconds for s in got],
            seconds=best.seconds,
            flows=best.flows,
            packets=best.packets,
            peak_rss_kb=max(s.maxrss_kb for s in got),
            extra={**{k: v for s in got for k, v in s.extra.items()}, **best.extra},  # stages: run 0
        )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(width=max(160, Console().width))
    started = time.perf_counter()
    cores = usable_cores()  # before run_all moves this driver off the measured core
    capture = prepare_capture(args, console)
    tools = run_all(args, capture, console)
    doc = summarise(capture, tools, FLOOR)
    doc["machine"] = {
        "cpu": _cpu_model(),
        "cores_usable": len(cores),
        "pinned_core": cores[0],
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    doc["bench_seconds"] = time.perf_counter() - started
    doc["quick"] = args.quick
    print_report(doc, console)
    out = args.out / "meter.json"
    out.write_text(json.dumps(doc, indent=2, default=str))
    console.print(f"results: {out}")
    failed = [n for n, t in tools.items() if t.get("error")]
    return 1 if failed else 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
