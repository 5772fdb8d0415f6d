"""Agent footprint: wire reduction on a realistic replay, and RSS with 250k active flows.

    .venv/bin/python bench/agent/footprint.py [--scenario small-cloud] [--flows 250000] [--batch 4096]
        [--rss-only] [--out DIR]

1. Wire reduction: replays a ``cloudtap synth`` scenario through a real :class:`Agent` (replay mode,
   parquet output) and divides the captured wire bytes by the bytes the agent wrote: 1-minute edges
   only (what a central store needs for topology and history), and everything (flow records + 1 s and
   1 min edges). Target: >= 1000:1 at 1-minute records.
2. RSS at N active flows: a fresh process with what ``cloudtap agent run`` imports in live mode
   (the CLI, runner, control server, sinks, parquet, psutil, prometheus-client, pyroute2: as the
   warm agent process of tests/agent/test_budget.py) and every kernel loaded (from numba's cache: a
   cold cache is compiled by a child, see ``cloudtap.agent.warmup``), pyarrow kept from loading
   pandas as in ``cloudtap agent run``, and a meter holding N concurrent flows (UDP conversations
   that never expire during the run). Target: <= 256 MiB. PSS is shown next to it. Until 2026-12 the
   process imported only the meter and the warm-up (~36 MiB less than an agent).
   The packets reach the meter in batches of ``--batch`` rows (4096: an agent meters one ring block
   of a few thousand frames at a time; it never holds all N packets at once), each batch built just
   before it is metered. Until 2026-12 the bench built all N packets in one array (250k x 152 B =
   36 MiB that an agent never holds); ``--batch 0`` still does that.
   Measured twice, in two fresh processes: as loaded, and with LLVM's code pages let go after the
   warm-up (:func:`cloudtap.agent.lean.release_startup_pages`); each also after one more batch of
   packets, to show what the meter touches again. RSS is split into anonymous memory (the process's
   own) and file-backed pages (shared library code: shared, clean, reclaimable).
Prints a table and writes ``footprint.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

#: What a live ``cloudtap agent run`` process has imported before its first packet.
AGENT_MODULES = (
    "cloudtap.cli.main",
    "cloudtap.agent.runner",
    "cloudtap.agent.control",
    "cloudtap.agent.sinks",
    "pyarrow.parquet",
    "psutil",
    "prometheus_client",
    "pyroute2",
)

_RSS_CHILD = r"""
import importlib, json, sys, numpy as np
from cloudtap.agent.lean import keep_pandas_out, release_startup_pages
keep_pandas_out()
for mod in AGENT_MODULES:
    try:
        importlib.import_module(mod)
    except ImportError:
        pass
from cloudtap.agent.warmup import warm_up
from cloudtap.meter import Meter, MeterConfig
from cloudtap.schema.packet import empty_packets, IPV4_MAPPED_LO
release = sys.argv[3] == "release"
warm_up(release_pages=False)  # as the agent: warm_up(), which releases by default; measured both ways here
n, batch = int(sys.argv[1]), int(sys.argv[2])
released = release_startup_pages() if release else 0
def memory():
    got = {}
    for line in open('/proc/self/status'):
        key = line.split(':')[0]
        if key in ('VmRSS', 'RssAnon', 'RssFile', 'RssShmem'):
            got[{'VmRSS': 'rss', 'RssAnon': 'anon', 'RssFile': 'file', 'RssShmem': 'shmem'}[key]] = int(line.split()[1]) * 1024
    for line in open('/proc/self/smaps_rollup'):
        if line.startswith('Pss:'):
            got['pss'] = int(line.split()[1]) * 1024
    return got
def packets(lo, hi, t0):
    p = empty_packets(hi - lo)
    i = np.arange(lo, hi, dtype=np.uint64)
    p['ts_ns'] = t0 + i.astype(np.int64) * 1000
    p['src_lo'] = IPV4_MAPPED_LO | (0x0A000000 + (i // 50000))
    p['dst_lo'] = IPV4_MAPPED_LO | 0x0A640001
    p['sport'] = (1024 + i % 50000).astype(np.uint16)
    p['dport'] = 53
    p['proto'] = 17; p['ip_ver'] = 4; p['ip_len'] = 80; p['wire_len'] = 94; p['flags'] = 8
    return p
base = memory()
m = Meter(MeterConfig(max_flows=int(n * 1.05), key_by_interface=True, output_batch=4096))
t0 = 1_800_000_000_000_000_000
step = batch or n
for lo in range(0, n, step):
    p = packets(lo, min(n, lo + step), t0)
    m.add(p)
held = memory()  # with the last batch still held, as a worker holds its current one
m.add(packets(n - min(n, 4096), n, t0 + n * 1000))  # one more batch of the same flows, later
again = memory()
arrays = {name: getattr(m, name).nbytes for name in
          ('_fs', '_ds', '_idx_slot', '_idx_hash', '_free', '_active', '_active_pos', '_out', '_edges')}
print(json.dumps({"baseline": base, "held": held, "again": again, "released_bytes": released,
                  "active": m.active_flows, "capacity": m.capacity, "arrays": arrays,
                  "table_bytes_per_flow": m.bytes_per_flow_slot}))
"""


def wire_reduction(scenario: str, out: Path) -> dict[str, float]:
    """Replay a scenario through the agent; return bytes captured vs written."""
    from cloudtap.agent.config import load_agent_config
    from cloudtap.agent.runner import Agent

    pcap = out / f"{scenario}.pcap"
    # Synthesise in a child process so its memory does not count against the agent's grant here.
    code = (
        "import sys, json; from cloudtap.synth import builtin_scenario, write_pcap; "
        "r = write_pcap(builtin_scenario(sys.argv[1]), sys.argv[2]); print(r.packets)"
    )
    made = subprocess.run(
        [sys.executable, "-c", code, scenario, str(pcap)], capture_output=True, text=True, check=True
    )
    packets = int(made.stdout.split()[-1])
    records = out / "records"
    env = {
        "CLOUDTAP_AGENT__CAPTURE__MODE": "replay",
        "CLOUDTAP_AGENT__CAPTURE__REPLAY_FILE": str(pcap),
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(records),
        "CLOUDTAP_AGENT__OUTPUT__ROTATE_S": "3600",
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
    }
    agent = Agent(load_agent_config(None, env=env))
    agent.run()
    status = agent.status()

    def size(kind: str) -> int:
        return sum(f.stat().st_size for f in (records / kind).glob("*"))

    edges_60 = size("edges_60s")
    everything = size("flows") + size("edges_1s") + edges_60
    return {
        "packets": float(packets),
        "captured_packets": float(status.captured_packets),
        "captured_bytes": float(status.captured_bytes),
        "edges_60s_bytes": float(edges_60),
        "all_bytes": float(everything),
        "reduction_edges_60s": status.captured_bytes / max(edges_60, 1),
        "reduction_all": status.captured_bytes / max(everything, 1),
    }


def rss_at(flows: int, batch: int, release: bool) -> dict[str, object]:
    """Memory of a fresh process holding ``flows`` active flows (see the module docstring)."""
    code = f"AGENT_MODULES = {AGENT_MODULES!r}\n{_RSS_CHILD}"
    args = [sys.executable, "-c", code, str(flows), str(batch), "release" if release else "loaded"]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _mib(n: object) -> str:
    return f"{float(n) / 2**20:,.0f} MiB"  # type: ignore[arg-type]


def _rss_rows(table: Table, name: str, got: dict[str, dict[str, int]]) -> None:
    held, base = got["held"], got["baseline"]
    table.add_row(f"RSS with {got['active']:,} active flows, {name}", _mib(held["rss"]), "<= 256 MiB")
    table.add_row("  anonymous / file-backed", f"{_mib(held['anon'])} / {_mib(held['file'])}", "")
    table.add_row(
        "  of which baseline (interpreter, agent modules, kernels), anon / file",
        f"{_mib(base['rss'])} ({_mib(base['anon'])} / {_mib(base['file'])})",
        "",
    )
    table.add_row("  after one more batch", _mib(got["again"]["rss"]), "")
    table.add_row("  PSS (shared pages split between processes)", f"{_mib(held['pss'])} (baseline "
                  f"{_mib(base['pss'])})", "")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="small-cloud")
    parser.add_argument("--flows", type=int, default=250_000)
    parser.add_argument("--batch", type=int, default=4096, help="packets per meter call (0: all at once)")
    parser.add_argument("--rss-only", action="store_true", help="skip the wire reduction replay")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="cloudtap-footprint-"))
    out.mkdir(parents=True, exist_ok=True)
    wire = None if args.rss_only else wire_reduction(args.scenario, out)
    loaded = rss_at(args.flows, args.batch, release=False)
    released = rss_at(args.flows, args.batch, release=True)
    table = Table(title="agent footprint", header_style="bold cyan")
    for col in ("measure", "value", "target"):
        table.add_column(col)
    if wire is not None:
        table.add_row(
            "wire reduction, 1-min edges only", f"{wire['reduction_edges_60s']:,.0f} : 1", ">= 1000 : 1"
        )
        table.add_row("wire reduction, flows + 1 s + 1 min edges", f"{wire['reduction_all']:,.0f} : 1", "")
    _rss_rows(table, "as loaded", loaded)  # type: ignore[arg-type]
    _rss_rows(table, "LLVM pages released", released)  # type: ignore[arg-type]
    table.add_row("  LLVM code pages released after warm-up", _mib(released["released_bytes"]), "")
    table.add_row("flow table bytes per flow slot", f"{loaded['table_bytes_per_flow']:,.0f} B", "<= 512 B")
    Console().print(table)
    result = {"wire": wire, "rss": loaded, "rss_released": released, "batch": args.batch}
    (out / "footprint.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
