"""Benchmark: the agent replaying a capture with request parsing on vs off, and vs tshark.

Usage: python bench/agent/requests.py [--repeat N] [--runs 3] [--pcap F ...] [--no-tshark]

The input is the mixed pcapng of ``bench/meter/l7.py`` (every shared HTTP/DNS/MySQL/PostgreSQL/Redis
capture, ``--repeat`` times a day apart, then any ``--pcap``). In the same run, on that file, it times
(best of ``--runs``) a whole agent in replay mode (``Agent.run``: capture worker, decode, meter, output
annotation into an in-memory sink):

* ``agent``: ``requests.enabled: false`` (the default),
* ``agent + requests``: ``requests.enabled: true`` (parser on the same rows, request records annotated and
  written as kind ``requests``, flow records annotated with their request counts),
* ``annotate_flows``: the flow-count join alone, on the flow records of that run (records per second),
* ``tshark -T fields`` extracting the request fields from the same file, once.

It prints packets per CPU second (the agent's wall time ends on its 1 s housekeeping tick) and the
ratios ``agent + requests / agent`` and ``agent + requests / tshark`` (tshark: wall = CPU, one thread).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]


def _l7_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("l7_bench", REPO / "bench" / "meter" / "l7.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run_agent(pcap: Path, out: Path, requests: bool):  # type: ignore[no-untyped-def]
    """(wall seconds, cpu seconds, agent, sink) of one replay of ``pcap``."""
    from cloudtap.agent.config import load_agent_config
    from cloudtap.agent.runner import Agent
    from cloudtap.agent.sinks import MemorySink

    env = {
        "CLOUDTAP_AGENT__CAPTURE__MODE": "replay",
        "CLOUDTAP_AGENT__CAPTURE__REPLAY_FILE": str(pcap),
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(out),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "4096",
        "CLOUDTAP_AGENT__LIMITS__MAX_CPU_CORES": "64",
        "CLOUDTAP_AGENT__BREAKERS__MAX_LOAD_PER_CORE": "1000",  # a busy bench host must not pause the replay
        "CLOUDTAP_AGENT__REQUESTS__ENABLED": "true" if requests else "false",
    }
    sink = MemorySink()
    agent = Agent(load_agent_config(None, env=env), sink=sink)
    cpu, wall = time.process_time(), time.perf_counter()
    agent.run()
    return time.perf_counter() - wall, time.process_time() - cpu, agent, sink


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=40, help="times the L7 captures are read in one stream")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pcap", type=Path, action="append", default=[], help="extra capture(s) in the stream")
    ap.add_argument("--no-tshark", action="store_true")
    args = ap.parse_args(argv)
    console = Console()
    l7 = _l7_bench()
    if not (l7.PCAPS / "MANIFEST.csv").is_file():
        console.print(f"[red]no shared captures at {l7.PCAPS}[/]")
        return 2
    import numpy as np

    from cloudtap.l7 import RequestConfig, RequestParser
    from cloudtap.schema.flow import FLOW_DTYPE

    with tempfile.TemporaryDirectory(prefix="cloudtap-agent-requests-bench-") as tmp:
        mixed = l7.build_mixed(l7.l7_captures(), args.repeat, list(args.pcap), Path(tmp))
        run_agent(mixed, Path(tmp) / "warm", True)  # kernels from the cache, page cache warm
        runs: dict[bool, tuple[float, float, object, object]] = {}
        for _ in range(args.runs):
            for on in (False, True):
                result = run_agent(mixed, Path(tmp) / f"out-{on}", on)
                if on not in runs or result[0] < runs[on][0]:
                    runs[on] = result
        t_ts, ts_lines = l7.run_tshark(mixed) if not args.no_tshark and shutil.which("tshark") else (None, 0)
    off, on = runs[False], runs[True]
    packets = off[2].status().captured_packets  # type: ignore[attr-defined]
    req_table = on[3].table("requests")  # type: ignore[attr-defined]
    requests = req_table.num_rows if req_table is not None else 0
    flows_table = on[3].table("flows")  # type: ignore[attr-defined]
    # The join alone, on as many records as the run wrote (random keys: the miss path, as for most flows).
    n = max(flows_table.num_rows, 100_000)
    rng = np.random.default_rng(7)
    records = np.zeros(n, FLOW_DTYPE)
    for name in ("client_lo", "server_lo"):
        records[name] = rng.integers(0, 1 << 63, n, dtype=np.int64).astype(np.uint64)
    for name in ("client_port", "server_port"):
        records[name] = rng.integers(1, 65535, n).astype(np.uint16)
    records["proto"] = 6
    parser = RequestParser(RequestConfig(count_hold_s=600, count_period_s=60))
    parser.annotate_flows(records[:1].copy())  # compiled / loaded
    t_join = min(_timed_annotate(parser, records.copy()) for _ in range(5))
    # The agent's wall time ends on its 1 s housekeeping tick: compare CPU seconds (start-up included).
    table = Table(title=f"agent replay: {packets:,} packets, {requests:,} requests, {n:,} join records")
    for col in ("run", "wall s", "cpu s", "Mpps per cpu s", "cpu vs agent + requests"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for label, (wall, cpu, *_rest) in (("agent", off), ("agent + requests", on)):
        table.add_row(label, f"{wall:.3f}", f"{cpu:.3f}", f"{packets / cpu / 1e6:.3f}", f"{cpu / on[1]:.2f}")
    table.add_row("annotate_flows (join alone)", f"{t_join:.4f}", "", f"{n / t_join / 1e6:.1f} M rec/s", "")
    if t_ts is not None:
        table.add_row(
            "tshark -T fields", f"{t_ts:.3f}", "", f"{packets / t_ts / 1e6:.3f}", f"{t_ts / on[1]:.1f}"
        )
    console.print(table)
    ratio = off[1] / on[1]
    console.print(
        f"agent + requests rate / agent rate (cpu) = [bold]{ratio:.2f}[/] (cores: {os.cpu_count()})"
    )
    if t_ts is not None:
        console.print(
            f"agent + requests rate / tshark rate = [bold]{t_ts / on[1]:.1f}[/] ({ts_lines:,} frames)"
        )
    return 0


def _timed_annotate(parser, records) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    parser.annotate_flows(records)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
