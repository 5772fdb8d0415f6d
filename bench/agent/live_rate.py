"""Live capture at the traffic generator's maximum: does the agent keep up with zero drops?

    .venv/bin/python bench/agent/live_rate.py [--frames 500000] [--senders 2]

Builds a virtual hypervisor (namespaces as VMs, host-side taps on a bridge; needs root), runs a real
:class:`Agent` on the taps, and has ``--senders`` VMs blast raw UDP frames as fast as Python's raw
sockets go (the fastest generator here, ~100-200 kpps each) at one receiver VM. Every frame crosses
two taps (sender's and receiver's), so the agent sees 2 x frames. Reports the offered rate, what the
agent captured and metered, kernel drops, and the agent's CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from cloudtap.agent.config import load_agent_config  # noqa: E402
from cloudtap.agent.runner import Agent  # noqa: E402
from cloudtap.agent.sinks import MemorySink  # noqa: E402
from netns import VirtualNetwork, netns_available  # noqa: E402


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, payload: int = 18) -> bytes:
    """An Ethernet/IPv4/UDP frame (IP checksum right, UDP checksum 0)."""
    mac = lambda m: bytes(int(x, 16) for x in m.split(":"))  # noqa: E731
    ip = lambda a: bytes(int(x) for x in a.split("."))  # noqa: E731
    udp = struct.pack("!HHHH", sport, 9, 8 + payload, 0) + bytes(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, ip(src_ip), ip(dst_ip))
    total = sum(struct.unpack("!10H", hdr))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    hdr = hdr[:10] + struct.pack("!H", ~total & 0xFFFF) + hdr[12:]
    return mac(dst_mac) + mac(src_mac) + b"\x08\x00" + hdr + udp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=500_000, help="frames per sender")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    ok, why = netns_available()
    if not ok:
        Console(stderr=True).print(f"[yellow]skipped:[/] {why}")
        return 0
    sink = MemorySink()
    with VirtualNetwork(prefix="clr") as net:
        rx = net.add_vm("rx", "10.81.0.100/24")
        senders = [net.add_vm(f"tx{i}", f"10.81.0.{i + 1}/24") for i in range(args.senders)]
        env = {
            "CLOUDTAP_AGENT__CAPTURE__INTERFACE_PATTERN": f"^tap{net.uid}",
            "CLOUDTAP_AGENT__CAPTURE__LIBVIRT_DIRS": "[]",
            "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": "/tmp/cloudtap-live-rate",
            "CLOUDTAP_AGENT__CONTROL__PORT": "0",
            "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
            "CLOUDTAP_AGENT__LIMITS__MAX_CPU_CORES": "1.0",
        }
        agent = Agent(load_agent_config(None, env=env), sink=sink)
        agent.start()
        runner = threading.Thread(target=agent.run, daemon=True)
        runner.start()
        while len(agent.status().interfaces) < 1 + args.senders:
            time.sleep(0.05)
        time.sleep(0.3)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        procs = [
            vm.send_frames(udp_frame(vm.mac, rx.mac, vm.ip, "10.81.0.200", 20000 + i), count=args.frames)
            for i, vm in enumerate(senders)
        ]
        for p in procs:
            p.wait(timeout=600)
        send_s = time.monotonic() - started
        time.sleep(1.0)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        agent.shutdown()
        runner.join(10)
        status = agent.status()
    sent = args.frames * args.senders
    metered = sum(w.meter.stats.metered for w in agent.workers)
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / (send_s + 1.0)
    figures = {
        "frames_sent": sent,
        "offered_pps": sent / send_s,
        "expected_captures": 2 * sent,
        "captured": status.captured_packets,
        "metered": metered,
        "kernel_drops": status.kernel_drops,
        "agent_cpu_cores": cpu,
    }
    table = Table(title="agent live capture at the generator's maximum", header_style="bold cyan")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("frames sent (all senders)", f"{sent:,}")
    table.add_row("offered rate", f"{sent / send_s:,.0f} pps ({2 * sent / send_s:,.0f} pps at the taps)")
    table.add_row("captured at the taps (expected 2 x sent)", f"{status.captured_packets:,}")
    table.add_row("metered", f"{metered:,}")
    table.add_row("kernel drops", f"{status.kernel_drops:,}")
    table.add_row("agent CPU while sending", f"{cpu:.2f} cores")
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if status.kernel_drops == 0 and status.captured_packets == 2 * sent else 1


if __name__ == "__main__":
    raise SystemExit(main())
