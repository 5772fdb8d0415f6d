"""The packet broker's forwarding rate on one core, against tcpreplay and a kernel (tc mirred) mirror.

    .venv/bin/python bench/broker/run.py [--frames 200000] [--seconds 3] [--json out.json]

Needs root (namespaces), tcpreplay, tc. Topology: a "tool" namespace behind a veth (host end has an
address) with a kernel VXLAN device ``vx0`` (VNI 77) that counts the copies it decapsulates; a "gen"
namespace whose veth's host end is a VM tap.

Measured, each pinned to CPU 0:

1. **cloudtap**: :meth:`Broker.process` on in-memory batches of 1024 distinct frames (decoded once, as the
   capture worker hands them over), VXLAN to the tool, at 128-byte truncation and at full size (1000-byte
   frames). Copies/s = copies the tool's ``vx0`` received / elapsed.
2. **tcpreplay**: ``tcpreplay --topspeed`` of the same frames (and their 128-byte cut) straight onto the
   tool's veth: the rate of putting these packets on a wire from user space, no encapsulation.
3. **kernel mirror**: tcpreplay in "gen" sends the frames into the tap; ``tc`` clsact ingress ``u32`` match +
   ``mirred egress mirror dev`` a host VXLAN device to the tool (full size only: tc cannot truncate).
4. **zero loss below the cap**: the broker live (AfPacketSource on the tap, as the agent) while tcpreplay
   sends at its top speed; the copies the tool counts against the frames sent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from cloudtap.agent.identity import ObservationPoints  # noqa: E402
from cloudtap.broker.broker import Broker  # noqa: E402
from cloudtap.broker.config import BrokerSection  # noqa: E402
from cloudtap.capture.afpacket import AfPacketSource  # noqa: E402
from cloudtap.capture.frames import FrameBatch  # noqa: E402
from cloudtap.capture.ring_config import RingConfig  # noqa: E402
from cloudtap.decode.decode import decode_frames  # noqa: E402
from netns import VirtualNetwork, netns_available  # noqa: E402

BATCH = 1024
FRAME = 1000


def frames(n: int, size: int = FRAME) -> list[bytes]:
    """``n`` distinct Ethernet/IPv4/UDP frames of ``size`` bytes (distinct IP id and source port)."""
    out = []
    payload = bytes(size - 42)
    for i in range(n):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size - 14, i & 0xFFFF, 0, 64, 17, 0,
                         bytes([10, 66, 0, 1]), bytes([10, 66, 0, 2]))  # fmt: skip
        udp = struct.pack("!HHHH", 1024 + (i >> 16) % 60000, 9, size - 34, 0)
        out.append(b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + udp + payload)
    return out


def write_pcap(path: Path, items: list[bytes], snap: int = 0) -> None:
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, f in enumerate(items):
            body = f[:snap] if snap else f
            fh.write(struct.pack("<IIII", i // 1_000_000, i % 1_000_000, len(body), len(body)) + body)


def sh(*cmd: str, check: bool = True) -> str:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout + res.stderr


def counter(netns: str, dev: str, kind: str = "rx_packets") -> int:
    return int(sh("ip", "netns", "exec", netns, "cat", f"/sys/class/net/{dev}/statistics/{kind}").strip())


def tcpreplay(pcap: Path, dev: str, netns: str | None = None, pps: int = 0) -> float:
    """Packets per second tcpreplay reports (``--topspeed`` unless ``pps``, pinned to CPU 0)."""
    speed = f"--pps={pps}" if pps else "--topspeed"
    cmd = ["taskset", "-c", "0", "tcpreplay", speed, "-i", dev, str(pcap)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = sh(*cmd)
    m = re.search(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps", out)
    return float(m.group(1)) if m else 0.0


def batches(items: list[bytes]) -> list[tuple[FrameBatch, np.ndarray]]:
    out = []
    for start in range(0, len(items), BATCH):
        chunk = items[start : start + BATCH]
        data = np.frombuffer(b"".join(chunk), np.uint8).copy()
        lens = np.array([len(f) for f in chunk], np.uint32)
        offs = np.concatenate([[0], np.cumsum(lens[:-1], dtype=np.int64)]).astype(np.int64)
        n = len(chunk)
        batch = FrameBatch(data, offs, lens, lens.copy(), np.arange(n, dtype=np.int64) * 1000,
                           np.ones(n, np.uint16), np.zeros(n, np.uint16))  # fmt: skip
        out.append((batch, decode_frames(batch)))
    return out


def section(tool_ip: str, truncate: int, max_bps: int = 0, burst: int = 1 << 20) -> BrokerSection:
    return BrokerSection.model_validate({
        "enabled": True,
        "destinations": [{"name": "tool", "encap": "vxlan", "address": tool_ip, "vni": 77, "max_bps": max_bps,
                          "burst_bytes": burst}],
        "rules": [{"name": "all", "interfaces": ["*"], "truncate": truncate, "destinations": ["tool"]}]})  # fmt: skip


def broker_rate(tool_ns: str, tool_ip: str, work: list[tuple[FrameBatch, np.ndarray]], truncate: int,
                seconds: float) -> dict[str, float]:  # fmt: skip
    """Copies/s of Broker.process on CPU 0 (counted where the tool decapsulates them)."""
    points = ObservationPoints()
    points.register("tap0")
    broker = Broker(section(tool_ip, truncate), points)
    os.sched_setaffinity(0, {0})
    broker.process(*work[0])  # compiled/loaded before timing
    warm = broker.status()["destinations"]["tool"]["packets"]
    before = counter(tool_ns, "vx0")
    loops = 0
    started = time.perf_counter()
    cpu0 = time.process_time()
    while time.perf_counter() - started < seconds:
        loops += 1
        for batch, rows in work:
            shifted = dataclasses.replace(batch, ts_ns=batch.ts_ns + loops * 10**9)  # no dedup across loops
            rows = rows.copy()
            rows["ts_ns"] += loops * 10**9
            broker.process(shifted, rows)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    time.sleep(0.3)
    arrived = counter(tool_ns, "vx0") - before
    c = broker.status()["destinations"]["tool"]
    broker.close()
    return {"sent": c["packets"] - warm, "arrived": arrived, "pps": arrived / elapsed, "cpu_s": cpu, "elapsed_s": elapsed,
            "drops_error": c["drops_error"]}  # fmt: skip


def live_zero_loss(gen, tool_ns: str, tool_ip: str, pcap: Path, n: int, max_bps: int, pps: int = 0):  # type: ignore[no-untyped-def]
    """The broker on a real AfPacketSource while one tcpreplay sends (at its top speed unless ``pps``)."""
    points = ObservationPoints()
    points.register(gen.tap_name)
    broker = Broker(section(tool_ip, 128, max_bps, burst=16 << 20), points)
    source = AfPacketSource([gen.tap_name], RingConfig(block_size=1 << 20, block_count=64, snaplen=2048))
    stop = threading.Event()

    def pump() -> None:
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
        idle = 0
        while idle < 5:
            batch = source.read(0.05)
            if batch is None or len(batch) == 0:
                idle += stop.is_set()
                continue
            idle = 0
            broker.process(batch, decode_frames(batch))

    thread = threading.Thread(target=pump)
    thread.start()
    time.sleep(0.5)
    before = counter(tool_ns, "vx0")
    rate = tcpreplay(pcap, "eth0", gen.netns, pps)
    stop.set()
    thread.join()
    time.sleep(0.3)
    arrived = counter(tool_ns, "vx0") - before
    stats = source.stats()
    source.close()
    c = broker.status()["destinations"]["tool"]
    broker.close()
    return {"offered": n, "generator_pps": rate, "captured": stats.packets, "kernel_drops": stats.kernel_drops,
            "sent": c["packets"], "arrived": arrived, "drops_cap": c["drops_cap"],
            "zero_loss": bool(c["packets"] == n and arrived >= n and stats.kernel_drops == 0)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=200_000, help="distinct frames generated")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing of each broker run")
    parser.add_argument("--cap-bps", type=int, default=1_000_000_000, help="broker cap in the live runs")
    parser.add_argument(
        "--live-pps", default="60000,100000,200000", help="paced live runs: tcpreplay --pps values"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console()
    ok, why = netns_available()
    missing = [t for t in ("tcpreplay", "tc", "taskset") if shutil.which(t) is None]
    if not ok or missing:
        Console(stderr=True).print(f"[yellow]skipped:[/] {why or 'needs ' + ', '.join(missing)}")
        return 0
    items = frames(args.frames)
    work = batches(items[: min(len(items), 64 * BATCH)])
    tmp = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    full_pcap, cut_pcap = tmp / "full.pcap", tmp / "cut.pcap"
    write_pcap(full_pcap, items)
    write_pcap(cut_pcap, items, snap=128)
    results: dict[str, object] = {}
    with VirtualNetwork(prefix="bb", bridge=False) as net:
        tool = net.add_vm("tool", "10.198.7.2/24")
        gen = net.add_vm("gen", "10.198.8.2/24")
        sh("ip", "addr", "add", "10.198.7.1/24", "dev", tool.tap_name)
        tool.run(["ip", "link", "add", "vx0", "type", "vxlan", "id", "77", "dstport", "4789", "local", tool.ip,
                  "dev", "eth0", "nolearning"])  # fmt: skip
        tool.run(["ip", "link", "set", "vx0", "up"])
        vxh = f"vxh{net.uid}"
        sh("ip", "link", "add", vxh, "type", "vxlan", "id", "77", "dstport", "4789", "remote", tool.ip,
           "local", "10.198.7.1", "dev", tool.tap_name)  # fmt: skip
        sh("ip", "link", "set", tool.tap_name, "mtu", "9050")
        tool.run(["ip", "link", "set", "eth0", "mtu", "9050"])
        sh("ip", "link", "set", vxh, "mtu", "9000", "up")
        try:
            for label, trunc, pcap in (("128 B", 128, cut_pcap), ("full", 0, full_pcap)):
                cloud = broker_rate(tool.netns, tool.ip, work, trunc, args.seconds)
                rx0 = counter(tool.netns, "eth0")
                replay_pps = tcpreplay(pcap, tool.tap_name)
                results[label] = {"cloudtap": cloud, "tcpreplay_pps": replay_pps,
                                  "tcpreplay_arrived": counter(tool.netns, "eth0") - rx0}  # fmt: skip
            sh("tc", "qdisc", "add", "dev", gen.tap_name, "clsact")
            sh("tc", "filter", "add", "dev", gen.tap_name, "ingress", "protocol", "all", "u32", "match", "u32", "0",
               "0", "action", "mirred", "egress", "mirror", "dev", vxh)  # fmt: skip
            before = counter(tool.netns, "vx0")
            started = time.perf_counter()
            gen_pps = tcpreplay(full_pcap, "eth0", gen.netns)
            elapsed = time.perf_counter() - started
            time.sleep(0.3)
            mirrored = counter(tool.netns, "vx0") - before
            results["kernel_mirror"] = {"generator_pps": gen_pps, "arrived": mirrored,
                                        "pps": min(gen_pps, mirrored / elapsed) if elapsed else 0.0}  # fmt: skip
            sh("tc", "qdisc", "del", "dev", gen.tap_name, "clsact")
            results["live"] = live_zero_loss(gen, tool.netns, tool.ip, full_pcap, len(items), args.cap_bps)
            for pps in [int(x) for x in args.live_pps.split(",") if x]:
                results[f"live_{pps}pps"] = live_zero_loss(gen, tool.netns, tool.ip, full_pcap, len(items),
                                                           args.cap_bps, pps)  # fmt: skip
        finally:
            sh("ip", "link", "del", vxh, check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title="broker copies/s on one core (VXLAN to a kernel vxlan device)")
    for col in ("size", "cloudtap copies/s", "arrived/sent", "tcpreplay pps", "cloudtap / tcpreplay",
                "kernel mirror pps", "cloudtap / kernel mirror"):  # fmt: skip
        table.add_column(col)
    km = results["kernel_mirror"]["pps"]  # type: ignore[index]
    for label in ("128 B", "full"):
        r = results[label]  # type: ignore[assignment]
        c = r["cloudtap"]  # type: ignore[index]
        table.add_row(label, f"{c['pps']:,.0f}", f"{c['arrived']}/{c['sent']}", f"{r['tcpreplay_pps']:,.0f}",  # type: ignore[index]
                      f"{c['pps'] / r['tcpreplay_pps']:.2f}" if r["tcpreplay_pps"] else "-",  # type: ignore[index]
                      f"{km:,.0f}" if label == "full" else "- (tc cannot truncate)",
                      f"{c['pps'] / km:.2f}" if label == "full" and km else "-")  # fmt: skip
    console.print(table)
    for key in [k for k in results if k.startswith("live")]:
        live = results[key]
        console.print(
            f"{key} (AfPacketSource -> broker, 1000 B frames cut to 128, cap {args.cap_bps / 1e9:g} Gbit/s): "  # type: ignore[index]
            f"one tcpreplay at {live['generator_pps']:,.0f} pps sent {live['offered']:,}; captured "  # type: ignore[index]
            f"{live['captured']:,}, kernel drops {live['kernel_drops']}, copies sent {live['sent']:,}, arrived "  # type: ignore[index]
            f"{live['arrived']:,}, cap drops {live['drops_cap']}: zero loss = {live['zero_loss']}"  # type: ignore[index]
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
