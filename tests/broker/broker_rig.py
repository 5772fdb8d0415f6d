"""A hypervisor with two VMs on a bridge and a "tool" namespace behind a veth, for broker tests.

The broker runs in the host namespace on a real AfPacketSource reading the VMs' taps (as the agent's
capture worker does: interface ids mapped to observation points, decode, then :meth:`Broker.process`) and
sends its copies to the tool namespace, where tcpdump writes what arrives to a pcap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

from cloudtap.agent.identity import ObservationPoints
from cloudtap.broker.broker import Broker
from cloudtap.broker.config import BrokerSection
from cloudtap.capture.afpacket import AfPacketSource
from cloudtap.capture.ring_config import RingConfig
from cloudtap.decode.decode import decode_frames
from netns import VM, VirtualNetwork

TOOLS = ("tcpdump", "tshark", "editcap")
_RUNNING: list[subprocess.Popen[str]] = []  # tcpdumps not stopped yet (a failed test leaves them running)


def kill_captures() -> None:
    """Stop every tcpdump still running (each keeps its namespace alive, routes included)."""
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def tools_missing() -> str:
    """Why the oracle tools are not usable ('' when they are)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return f"needs {', '.join(missing)}" if missing else ""


def read_pcap(path: Path) -> list[bytes]:
    """Frames of a classic pcap file (what tcpdump -w and editcap write by default)."""
    raw = path.read_bytes()
    magic = struct.unpack("<I", raw[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    pos, out = 24, []
    while pos + 16 <= len(raw):
        _, _, incl, _ = struct.unpack(endian + "IIII", raw[pos : pos + 16])
        out.append(raw[pos + 16 : pos + 16 + incl])
        pos += 16 + incl
    return out


def run(*cmd: str) -> str:
    """Run a command, return stdout (raises on failure)."""
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout


class Tcpdump:
    """tcpdump writing a pcap, in a namespace (or the host's when ``netns`` is None), until stopped."""

    def __init__(
        self, path: Path, iface: str, netns: str | None = None, expr: str = "", snaplen: int = 0
    ) -> None:
        self.path = path
        self.summary = ""
        cmd = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-s", str(snaplen), "-w", str(path)]
        cmd += [expr] if expr else []
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        _RUNNING.append(self.proc)
        line = self.proc.stderr.readline()  # "listening on ...": the capture is open
        if "listening" not in line:
            kill_captures()
            raise RuntimeError(f"tcpdump did not start: {line}")

    def stop(self) -> list[bytes]:
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=10)
        self.summary = " ".join(err.split())  #: tcpdump's closing counts (captured, dropped by kernel)
        if self.proc in _RUNNING:
            _RUNNING.remove(self.proc)
        return read_pcap(self.path)


class Rig:
    """vm1, vm2 on a bridge; ``tool`` behind a veth whose host end has ``host_ip``; a broker pump."""

    def __init__(self, prefix: str) -> None:
        self.net = VirtualNetwork(prefix=prefix)
        self.toolnet = VirtualNetwork(prefix=prefix + "t", bridge=False)
        seed = hashlib.blake2s(self.net.uid.encode(), digest_size=2).digest()
        base = f"10.{200 + seed[0] % 50}.{seed[1]}"
        try:
            self.vm1 = self.net.add_vm("vm1", f"10.{100 + seed[0] % 50}.{seed[1]}.1/24")
            self.vm2 = self.net.add_vm("vm2", f"10.{100 + seed[0] % 50}.{seed[1]}.2/24")
            self.tool: VM = self.toolnet.add_vm("tool", f"{base}.2/24")
            self.host_ip = f"{base}.1"
            run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.tool.tap_name)
            # permanent neighbours both ways: no ARP between the host and the tool (quiet, deterministic)
            tap_mac = Path(f"/sys/class/net/{self.tool.tap_name}/address").read_text().strip()
            run("ip", "neigh", "replace", self.tool.ip, "lladdr", self.tool.mac, "dev", self.tool.tap_name,
                "nud", "permanent")  # fmt: skip
            self.tool.run(["ip", "neigh", "replace", self.host_ip, "lladdr", tap_mac, "dev", "eth0", "nud",
                           "permanent"])  # fmt: skip
        except Exception:
            self.close()
            raise
        self.points = ObservationPoints()
        self.broker: Broker | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source: AfPacketSource | None = None
        self.pump_errors: list[str] = []
        self.prefix6 = f"fd7e:{seed.hex()}:{os.getpid() & 0xFFFF:x}:"  #: this rig's own IPv6 /64 (no clashes)

    def enable_ipv6(self, host6: str, tool6: str) -> None:
        """IPv6 underlay on the tool veth (the network helper turns IPv6 off everywhere)."""
        Path(f"/proc/sys/net/ipv6/conf/{self.tool.tap_name}/disable_ipv6").write_text("0")
        self.tool.run(["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6"])
        run("ip", "addr", "add", f"{host6}/64", "dev", self.tool.tap_name, "nodad")
        self.tool.run(["ip", "addr", "add", f"{tool6}/64", "dev", "eth0", "nodad"])
        # a permanent neighbour (as the network helper does for IPv4): no neighbour discovery racing the
        # link-local addresses' duplicate address detection of freshly enabled IPv6
        run(
            "ip",
            "-6",
            "neigh",
            "replace",
            tool6,
            "lladdr",
            self.tool.mac,
            "dev",
            self.tool.tap_name,
            "nud",
            "permanent",
        )

    def start(self, section: BrokerSection, taps: list[str] | None = None) -> Broker:
        """Capture the taps (both VMs' by default) and forward with ``section``."""
        taps = taps or [self.vm1.tap_name, self.vm2.tap_name]
        for tap in taps:
            self.points.register(tap)
        self.broker = Broker(section, self.points)
        self.source = AfPacketSource(taps, RingConfig(block_size=1 << 20, block_count=8, snaplen=65535))
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        return self.broker

    def _pump(self) -> None:
        assert self.source is not None and self.broker is not None
        idle = 0
        while idle < 3:  # once stopped, drain what the ring still holds (a slow first batch: numba loading)
            try:
                batch = self.source.read(0.05)
                if batch is None or len(batch) == 0:
                    idle += self._stop.is_set()
                    continue
                idle = 0
                ids = self.points.ids_for(self.source.interfaces)
                batch = dataclasses.replace(batch, interface=ids[batch.interface])
                self.broker.process(batch, decode_frames(batch))
            except Exception as exc:  # noqa: BLE001 - reported to the test
                self.pump_errors.append(repr(exc))

    def stop_pump(self, settle_s: float = 0.3) -> None:
        time.sleep(settle_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.source is not None:
            self.source.close()
            self.source = None

    def close(self) -> None:
        kill_captures()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.source is not None:
            self.source.close()
        if self.broker is not None:
            self.broker.close()
        self.toolnet.close()
        self.net.close()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tshark_fields(path: Path, fields: list[str], display: str = "") -> list[list[str]]:
    """``tshark -T fields`` rows (occurrences of a field joined by commas)."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    if display:
        cmd += ["-Y", display]
    for f in fields:
        cmd += ["-e", f]
    return [line.split("|") for line in run(*cmd).splitlines() if line.strip()]


def chop(path: Path, out: Path, head: int = 0, snap: int = 0) -> list[bytes]:
    """editcap: remove ``head`` bytes from the start of every frame and/or keep ``snap`` bytes of it."""
    cmd = ["editcap", "-F", "pcap"]
    if head:
        cmd += ["-C", str(head)]
    if snap:
        cmd += ["-s", str(snap)]
    run(*cmd, str(path), str(out))
    return read_pcap(out)
