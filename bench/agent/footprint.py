"""Agent footprint: wire reduction on a realistic replay, and RSS with 250k active flows.

    .venv/bin/python bench/agent/footprint.py [--scenario small-cloud] [--flows 250000] [--out DIR]

1. Wire reduction: replays a ``cloudtap synth`` scenario through a real :class:`Agent` (replay mode,
   parquet output) and divides the captured wire bytes by the bytes the agent wrote: 1-minute edges
   only (what a central store needs for topology and history), and everything (flow records + 1 s and
   1 min edges). Target: >= 1000:1 at 1-minute records.
2. RSS at N active flows: a fresh process with the agent's modules and kernels loaded (from numba's
   cache: a cold cache is compiled by a child, see ``cloudtap.agent.warmup``), pyarrow kept from
   loading pandas as in ``cloudtap agent run``, and a meter holding N concurrent flows (UDP
   conversations that never expire during the run). Target: <= 256 MiB. PSS is shown next to it.
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

_RSS_CHILD = r"""
import json, sys, numpy as np
from cloudtap.agent.lean import keep_pandas_out
from cloudtap.agent.warmup import warm_up
from cloudtap.meter import Meter, MeterConfig
from cloudtap.schema.packet import empty_packets, IPV4_MAPPED_LO
keep_pandas_out()
warm_up()
n = int(sys.argv[1])
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
def pss():
    for line in open('/proc/self/smaps_rollup'):
        if line.startswith('Pss:'):
            return int(line.split()[1]) * 1024
base, base_pss = rss(), pss()
m = Meter(MeterConfig(max_flows=int(n * 1.05), key_by_interface=True, output_batch=4096))
p = empty_packets(n)
i = np.arange(n, dtype=np.uint64)
p['ts_ns'] = 1_800_000_000_000_000_000 + i.astype(np.int64) * 1000
p['src_lo'] = IPV4_MAPPED_LO | (0x0A000000 + (i // 50000))
p['dst_lo'] = IPV4_MAPPED_LO | 0x0A640001
p['sport'] = (1024 + i % 50000).astype(np.uint16)
p['dport'] = 53
p['proto'] = 17; p['ip_ver'] = 4; p['ip_len'] = 80; p['wire_len'] = 94; p['flags'] = 8
m.add(p)
print(json.dumps({"baseline_rss": base, "rss": rss(), "baseline_pss": base_pss, "pss": pss(),
                  "active": m.active_flows,
                  "table_bytes_per_flow": m.bytes_per_flow_slot}))
"""


def wire_reduction(scenario: str, out: Path) -> dict[str, float]:
    """Replay a scenario through the agent; return bytes captured vs written."""
    from cloudtap.agent.config import load_agent_config
    from cloudtap.agent.runner import Agent

    pcap = out / f"{scenario}.pcap"
    # Synthesise in a child process so its memory does not count against the agent's grant here.
    code = "import sys, json; from cloudtap.synth import builtin_scenario, write_pcap; " \
        "r = write_pcap(builtin_scenario(sys.argv[1]), sys.argv[2]); print(r.packets)"
    made = subprocess.run([sys.executable, "-c", code, scenario, str(pcap)], capture_output=True, text=True, check=True)
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


def rss_at(flows: int) -> dict[str, float]:
    """RSS of a fresh process holding ``flows`` active flows."""
    done = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(flows)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="small-cloud")
    parser.add_argument("--flows", type=int, default=250_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="cloudtap-footprint-"))
    out.mkdir(parents=True, exist_ok=True)
    wire = wire_reduction(args.scenario, out)
    rss = rss_at(args.flows)
    table = Table(title="agent footprint", header_style="bold cyan")
    for col in ("measure", "value", "target"):
        table.add_column(col)
    table.add_row(
        "wire reduction, 1-min edges only", f"{wire['reduction_edges_60s']:,.0f} : 1", ">= 1000 : 1"
    )
    table.add_row("wire reduction, flows + 1 s + 1 min edges", f"{wire['reduction_all']:,.0f} : 1", "")
    table.add_row(
        f"RSS with {rss['active']:,} active flows", f"{rss['rss'] / 2**20:,.0f} MiB", "<= 256 MiB"
    )
    table.add_row("  of which baseline (interpreter + kernels)", f"{rss['baseline_rss'] / 2**20:,.0f} MiB", "")
    table.add_row(
        "PSS (shared library pages split between processes)",
        f"{rss['pss'] / 2**20:,.0f} MiB (baseline {rss['baseline_pss'] / 2**20:,.0f} MiB)", "",
    )
    table.add_row("  flow table bytes per flow slot", f"{rss['table_bytes_per_flow']:,.0f} B", "<= 512 B")
    Console().print(table)
    (out / "footprint.json").write_text(json.dumps({"wire": wire, "rss": rss}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
