"""Virtual networks for tests: network namespaces as "VMs" on a Linux bridge, like a hypervisor.

Each VM is a network namespace whose ``eth0`` is one end of a veth pair; the other end, named like
a libvirt tap (``tap<id><n>``), stays in the host namespace and is a port of the network's bridge::

    from netns import VirtualNetwork, needs_netns  # tests/ is on sys.path (tests/conftest.py)

    @needs_netns
    def test_x():
        with VirtualNetwork(prefix="ct") as net:
            vm1 = net.add_vm("vm1", "10.77.0.1/24")
            vm2 = net.add_vm("vm2", "10.77.0.2/24")
            assert vm1.ping(vm2.ip, count=3) == 3        # 6 frames on each tap: requests + replies
            with vm2.udp_sink(5000) as sink:
                vm1.send_udp(vm2.ip, 5000, count=100)
            assert sink.received == 100
            vm1.run(["ip", "addr"]); vm1.tap_name; vm1.tap_stats()

The network is quiet, so packet counts are exact: IPv6 is off on every device, VMs know each other's
MAC (permanent ARP entries, no ARP traffic), the bridge has static FDB entries (no flooding) and no
STP or multicast snooping. Only what a test sends crosses the taps. Traffic stays inside the
namespaces this helper creates. ``close()`` (or leaving the ``with``) deletes the namespaces (which
deletes the veth pairs) and the bridge; it also runs at interpreter exit if a test forgot.

Needs root and iproute2 (``ip``, ``bridge``); ``needs_netns`` skips a test otherwise. Senders are
small Python scripts run in the VM (``sys.executable``), so no ping/iperf binary is required.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

_COUNTER = itertools.count()
_IFNAMSIZ = 15


def netns_available() -> tuple[bool, str]:
    """Whether virtual networks can be built here, and why not."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, veth, bridge)"
    for tool in ("ip", "bridge"):
        if shutil.which(tool) is None:
            return False, f"needs iproute2 ({tool!r} not found)"
    if not Path("/proc/self/ns/net").exists():
        return False, "kernel has no network namespaces"
    return True, ""


needs_netns = pytest.mark.skipif(not netns_available()[0], reason=netns_available()[1] or "netns")
"""Marker: skip the test unless VirtualNetwork can work (root, iproute2)."""


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _write_sysctl(path: str, value: str) -> None:
    try:
        Path(path).write_text(value)
    except OSError:
        pass  # IPv6 compiled out, or the knob does not exist: nothing to silence


_PING_PY = r"""
import os, select, socket, struct, sys, time
dst, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
got = set()
for seq in range(count):
    body = struct.pack("!HH", ident, seq) + b"cloudtap-ping-payload-32-bytes!!"
    hdr = struct.pack("!BBH", 8, 0, csum(struct.pack("!BBH", 8, 0, 0) + body))
    s.sendto(hdr + body, (dst, 0))
    end = time.monotonic() + timeout
    while seq not in got and time.monotonic() < end:
        if not select.select([s], [], [], max(0.0, end - time.monotonic()))[0]:
            break
        pkt = s.recv(2048)
        icmp = pkt[(pkt[0] & 15) * 4:]
        if icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
            got.add(struct.unpack("!H", icmp[6:8])[0])
print(len(got))
"""

_SEND_UDP_PY = r"""
import socket, sys
dst, port, count, size, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if sport:
    s.bind(("0.0.0.0", sport))
payload = bytes(size)
for _ in range(count):
    s.sendto(payload, (dst, port))
print(count)
"""

_SEND_TCP_PY = r"""
import socket, sys
dst, port, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((dst, port), timeout=10)
chunk = bytes(65536)
left = nbytes
while left > 0:
    left -= s.send(chunk[: min(left, len(chunk))])
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
print(nbytes)
"""

_SINK_PY = r"""
import select, socket, sys
kind, port = sys.argv[1], int(sys.argv[2])
if kind == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("0.0.0.0", port))
else:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port)); srv.listen(1)
print("ready", flush=True)
total = 0
conns = []
socks = [s] if kind == "udp" else [srv]
while True:
    r = select.select(socks + [sys.stdin], [], [], 30)[0]
    if not r or sys.stdin in r:
        break
    for x in r:
        if kind == "tcp" and x is srv:
            c, _ = srv.accept(); socks.append(c); conns.append(c)
        elif kind == "udp":
            s.recv(65536); total += 1
        else:
            d = x.recv(1 << 20)
            if d:
                total += len(d)
            else:
                x.close(); socks.remove(x)
print(total, flush=True)
"""

_SEND_FRAMES_PY = r"""
import socket, sys
ifname, count, frame = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((ifname, 0))
send = s.send
for _ in range(count):
    send(frame)
print(count)
"""


class Sink:
    """A UDP datagram counter or TCP byte counter running in a VM (see ``VM.udp_sink``).

    Attributes:
        received: datagrams (UDP) or bytes (TCP) received, set by ``stop()``.
    """

    def __init__(self, vm: VM, kind: str, port: int) -> None:
        self.vm, self.kind, self.port = vm, kind, port
        self.received: int | None = None
        self._proc = vm.popen(
            [sys.executable, "-c", _SINK_PY, kind, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if line != "ready":
            self._proc.kill()
            raise RuntimeError(f"{kind} sink on {vm.name}:{port} did not start")

    def stop(self, settle_s: float = 0.05) -> int:
        """Stop the sink (after ``settle_s`` for in-flight packets) and return what it received."""
        if self.received is None:
            time.sleep(settle_s)
            out, _ = self._proc.communicate(input="", timeout=30)
            self.received = int(out.split()[-1])
        return self.received

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class VM:
    """A network namespace standing for a VM.

    Attributes:
        name: the VM's name in its network.
        netns: the namespace name (``ip netns exec <netns> ...``).
        tap_name: host-side veth end (a port of the bridge); capture here.
        ifname: the VM-side veth end (``eth0``).
        address: ``ip/prefix`` of ``eth0``.
        mac: MAC address of ``eth0``.
    """

    name: str
    netns: str
    tap_name: str
    address: str
    mac: str
    ifname: str = "eth0"

    @property
    def ip(self) -> str:
        """The VM's IPv4 address without the prefix length."""
        return self.address.split("/")[0]

    def run(
        self, cmd: Sequence[str], check: bool = True, timeout: float = 60, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the VM's namespace and wait for it (output captured as text)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        res = subprocess.run(["ip", "netns", "exec", self.netns, *cmd], timeout=timeout, **kwargs)
        if check and res.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(cmd)[:200]} failed ({res.returncode}): {res.stderr}")
        return res

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside the VM's namespace without waiting."""
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd], **kwargs)

    def python(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run a Python snippet in the VM; returns its stdout."""
        return self.run([sys.executable, "-c", code, *args], timeout=timeout).stdout

    def ping(self, dst: str, count: int = 3, timeout_s: float = 1.0) -> int:
        """ICMP echo ``count`` times, one at a time; returns the replies received."""
        return int(self.python(_PING_PY, dst, str(count), str(timeout_s)).split()[-1])

    def send_udp(self, dst: str, port: int, count: int, size: int = 32, sport: int = 0) -> int:
        """Send ``count`` UDP datagrams of ``size`` payload bytes; returns ``count``.

        Have a ``udp_sink`` listen on ``dst`` unless ICMP port-unreachable replies are wanted.
        """
        return int(self.python(_SEND_UDP_PY, dst, str(port), str(count), str(size), str(sport)).split()[-1])

    def send_tcp(self, dst: str, port: int, nbytes: int) -> int:
        """Open a TCP connection, send ``nbytes`` and close it; needs a ``tcp_sink`` on ``dst``."""
        return int(self.python(_SEND_TCP_PY, dst, str(port), str(nbytes)).split()[-1])

    def send_frames(self, frame: bytes, count: int = 1) -> subprocess.Popen[str]:
        """Start sending ``frame`` (a whole Ethernet frame) ``count`` times on ``eth0``, raw.

        Returns the sender process (``wait()`` on it); frames bypass the VM's IP stack.
        """
        return self.popen(
            [sys.executable, "-c", _SEND_FRAMES_PY, self.ifname, str(count), frame.hex()],
            stdout=subprocess.PIPE,
            text=True,
        )

    def udp_sink(self, port: int) -> Sink:
        """Start counting UDP datagrams on ``port`` (returns once listening)."""
        return Sink(self, "udp", port)

    def tcp_sink(self, port: int) -> Sink:
        """Start accepting TCP connections on ``port`` and counting bytes (returns once listening)."""
        return Sink(self, "tcp", port)

    def tap_stats(self) -> dict[str, int]:
        """Host-side tap counters (``rx_packets``, ``tx_packets``, ``rx_bytes``, ``tx_bytes``)."""
        base = Path("/sys/class/net") / self.tap_name / "statistics"
        return {k: int((base / k).read_text()) for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")}


class VirtualNetwork:
    """A bridge plus namespaces ("VMs") on it; see the module doc.

    Attributes:
        prefix: short tag in every name this network creates.
        bridge: the host bridge's name.
        vms: VMs by name.
    """

    def __init__(self, prefix: str = "ct", bridge: bool = True) -> None:
        """Create the (empty) network.

        Args:
            prefix: tag for namespace and bridge names (keep it short: interface names are <= 15 chars).
            bridge: attach the taps to a bridge; False leaves them as bare veth ends.
        """
        ok, why = netns_available()
        if not ok:
            raise RuntimeError(why)
        self.prefix = prefix
        self.uid = self._unique_id()
        self.bridge = f"br{prefix}{self.uid}"[:_IFNAMSIZ] if bridge else None
        self.vms: dict[str, VM] = {}
        self._next_idx = 0
        self._closed = False
        atexit.register(self.close)
        if self.bridge is not None:
            _sh(
                *f"ip link add {self.bridge} type bridge stp_state 0 forward_delay 0 mcast_snooping 0".split()
            )
            _write_sysctl(f"/proc/sys/net/ipv6/conf/{self.bridge}/disable_ipv6", "1")
            _sh("ip", "link", "set", self.bridge, "up")

    @staticmethod
    def _unique_id() -> str:
        while True:
            seed = f"{os.getpid()}-{next(_COUNTER)}-{time.monotonic_ns()}".encode()
            uid = hashlib.blake2s(seed, digest_size=4).hexdigest()[:5]
            if not Path(f"/sys/class/net/tap{uid}0").exists():
                return uid

    def add_vm(self, name: str, address: str, mac: str | None = None) -> VM:
        """Create a VM namespace with ``eth0`` at ``address`` and its tap on the bridge.

        Args:
            name: VM name (unique in this network).
            address: ``ip/prefix`` for ``eth0``, e.g. ``"10.77.0.1/24"``.
            mac: ``eth0``'s MAC; derived from the network id and VM index when None.

        Returns:
            The VM.
        """
        if name in self.vms:
            raise ValueError(f"VM {name!r} already exists")
        idx = self._next_idx
        self._next_idx += 1
        tap = f"tap{self.uid}{idx}"
        netns = f"{self.prefix}{self.uid}-{name}"
        if mac is None:
            h = hashlib.blake2s(f"{self.uid}{idx}".encode(), digest_size=3).digest()
            mac = ":".join(f"{b:02x}" for b in (2, h[0], h[1], h[2], (idx >> 8) & 0xFF, idx & 0xFF))
        vm = VM(name=name, netns=netns, tap_name=tap, address=address, mac=mac)
        _sh("ip", "netns", "add", netns)
        self.vms[name] = vm  # from here on, close() cleans it up
        vm.run(
            ["sh", "-c", "for k in all default; do echo 1 > /proc/sys/net/ipv6/conf/$k/disable_ipv6; done"],
            check=False,
        )
        _sh("ip", "link", "add", tap, "type", "veth", "peer", "name", vm.ifname, "netns", netns)
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6", "1")
        if self.bridge is not None:
            _sh("ip", "link", "set", tap, "master", self.bridge)
        _sh("ip", "link", "set", tap, "up")
        _sh("ip", "-n", netns, "link", "set", vm.ifname, "address", mac)
        _sh("ip", "-n", netns, "addr", "add", address, "dev", vm.ifname)
        _sh("ip", "-n", netns, "link", "set", "lo", "up")
        _sh("ip", "-n", netns, "link", "set", vm.ifname, "up")
        if self.bridge is not None:
            _sh("bridge", "fdb", "replace", mac, "dev", tap, "master", "static")
        for other in self.vms.values():
            if other is not vm:
                self._neigh(vm, other)
                self._neigh(other, vm)
        return vm

    @staticmethod
    def _neigh(vm: VM, other: VM) -> None:
        cmd = f"ip -n {vm.netns} neigh replace {other.ip} lladdr {other.mac} dev {vm.ifname} nud permanent"
        _sh(*cmd.split())

    def remove_vm(self, name: str) -> None:
        """Delete a VM (its namespace, veth pair and tap)."""
        vm = self.vms.pop(name)
        _sh("ip", "netns", "del", vm.netns, check=False)
        for other in self.vms.values():
            _sh("ip", "-n", other.netns, "neigh", "del", vm.ip, "dev", other.ifname, check=False)
        self._wait_gone(vm.tap_name)

    @staticmethod
    def _wait_gone(ifname: str, timeout_s: float = 5.0) -> None:
        end = time.monotonic() + timeout_s
        while Path(f"/sys/class/net/{ifname}").exists() and time.monotonic() < end:
            time.sleep(0.01)

    def close(self) -> None:
        """Delete every VM and the bridge; idempotent."""
        if self._closed:
            return
        self._closed = True
        for name in list(self.vms):
            self.remove_vm(name)
        if self.bridge is not None:
            _sh("ip", "link", "del", self.bridge, check=False)
        atexit.unregister(self.close)

    def __enter__(self) -> VirtualNetwork:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
