"""Tests for AfPacketSource: live capture on the host-side taps of a virtual network of namespaces.

Counts are exact: the network is quiet (see tests/netns.py) and each tap's own kernel counters
(rx_packets + tx_packets) are the reference, besides what the test sent.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from cloudtap.capture import afpacket
from cloudtap.capture.afpacket import AfPacketSource, RingConfig
from cloudtap.capture.source import PacketSource
from cloudtap.errors import CaptureError, ConfigError, FilterError
from netns import VM, VirtualNetwork, needs_netns

SMALL = RingConfig(block_size=1 << 16, block_count=8, block_timeout_ms=5)
HEAD = 64  # bytes of each frame kept by capture()


@dataclass
class Captured:
    """Copies of what a source handed out (batches are only valid until the next read)."""

    interface: np.ndarray
    cap_len: np.ndarray
    wire_len: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    head: np.ndarray  # uint8[n, HEAD], zero past cap_len

    def __len__(self) -> int:
        return int(self.interface.shape[0])

    def count(self, iface: int) -> int:
        return int(np.count_nonzero(self.interface == iface))

    def udp_dport(self) -> np.ndarray:
        """UDP/TCP destination port of IPv4 frames without options (-1 otherwise)."""
        h = self.head.astype(np.int64)
        is_l4 = (h[:, 12] == 8) & (h[:, 13] == 0) & (h[:, 14] == 0x45) & np.isin(h[:, 23], (6, 17))
        return np.where(is_l4, h[:, 36] << 8 | h[:, 37], -1)

    def sport(self) -> np.ndarray:
        h = self.head.astype(np.int64)
        return h[:, 34] << 8 | h[:, 35]


def capture(
    src: AfPacketSource, expect: int | None = None, quiet_s: float = 0.15, max_s: float = 5.0
) -> Captured:
    """Read until ``expect`` frames arrived (if given) and then nothing more for ``quiet_s``."""
    parts: list[tuple[np.ndarray, ...]] = []
    total = 0
    deadline = time.monotonic() + max_s
    last = time.monotonic()
    while time.monotonic() < deadline:
        batch = src.read(0.02)
        now = time.monotonic()
        if batch is not None and len(batch):
            last = now
            total += len(batch)
            idx = np.minimum(batch.offset[:, None] + np.arange(HEAD), batch.data.shape[0] - 1)
            head = np.where(np.arange(HEAD) < batch.cap_len[:, None], batch.data[idx], 0).astype(np.uint8)
            parts.append(
                (
                    batch.interface.copy(),
                    batch.cap_len.copy(),
                    batch.wire_len.copy(),
                    batch.ts_ns.copy(),
                    batch.linktype.copy(),
                    head,
                )
            )
        elif (expect is None or total >= expect) and now - last >= quiet_s:
            break
    if not parts:
        z = np.zeros(0, np.int64)
        return Captured(z, z, z, z, z, np.zeros((0, HEAD), np.uint8))
    return Captured(*(np.concatenate([p[i] for p in parts]) for i in range(6)))


def tap_packets(vm: VM) -> int:
    s = vm.tap_stats()
    return s["rx_packets"] + s["tx_packets"]


# -- without a network --------------------------------------------------------------------------


def test_ring_config_validation() -> None:
    with pytest.raises(ConfigError):
        RingConfig(block_size=1000)
    with pytest.raises(ConfigError):
        RingConfig(block_count=1)
    with pytest.raises(ConfigError):
        RingConfig(frame_size=100)
    with pytest.raises(ConfigError):
        RingConfig(fanout_mode="bogus")
    with pytest.raises(ConfigError):
        RingConfig(fanout_group=70000)
    assert RingConfig().blocks_per_read == 16
    assert RingConfig(read_blocks=3).blocks_per_read == 3


def test_missing_interface_and_bad_filter() -> None:
    with pytest.raises(CaptureError, match="does not exist"):
        AfPacketSource(["ct-no-such-if0"])
    with pytest.raises(FilterError):
        AfPacketSource(["lo"], RingConfig(bpf="udp port"))


def test_needs_root_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(afpacket.socket, "socket", refuse)
    with pytest.raises(CaptureError, match="needs root or CAP_NET_RAW"):
        AfPacketSource(["lo"], SMALL)


def test_empty_source_times_out_and_closes() -> None:
    src = AfPacketSource([], SMALL)
    assert isinstance(src, PacketSource)
    t0 = time.monotonic()
    assert src.read(0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 0.5
    src.close()
    src.close()
    with pytest.raises(CaptureError):
        src.read()


# -- on a virtual network -----------------------------------------------------------------------


@needs_netns
def test_exact_counts_per_tap_ping_udp_tcp() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        vm1 = net.add_vm("vm1", "10.77.1.1/24")
        vm2 = net.add_vm("vm2", "10.77.1.2/24")
        vm3 = net.add_vm("vm3", "10.77.1.3/24")
        vms = [vm1, vm2, vm3]
        with AfPacketSource([v.tap_name for v in vms], SMALL) as src:
            assert src.interfaces == [v.tap_name for v in vms]
            before = [tap_packets(v) for v in vms]
            t_start = time.time_ns()

            assert vm1.ping(vm2.ip, count=5) == 5
            got = capture(src, expect=20)
            assert [got.count(i) for i in range(3)] == [10, 10, 0]  # 5 requests + 5 replies each

            with vm2.udp_sink(5000) as sink:
                vm1.send_udp(vm2.ip, 5000, count=100, size=32)
            assert sink.received == 100
            got = capture(src, expect=200)
            assert [got.count(i) for i in range(3)] == [100, 100, 0]
            assert (got.udp_dport() == 5000).all()
            assert (got.wire_len == 14 + 20 + 8 + 32).all()
            assert (got.cap_len == got.wire_len).all()
            assert (got.linktype == 1).all()
            assert (got.ts_ns >= t_start).all() and (got.ts_ns <= time.time_ns()).all()

            with vm3.tcp_sink(5201) as tsink:
                vm2.send_tcp(vm3.ip, 5201, 2_000_000)
            assert tsink.received == 2_000_000
            got = capture(src, expect=10)
            n2, n3 = got.count(1), got.count(2)
            assert got.count(0) == 0 and n2 == n3 > 0
            assert int(got.wire_len[got.interface == 1].sum()) > 2_000_000  # every payload byte seen

            after = [tap_packets(v) for v in vms]
            stats = src.stats()
        for i, vm in enumerate(vms):
            per = stats.per_interface[vm.tap_name]
            assert per["packets"] == after[i] - before[i], vm.name  # the tap's own counters agree
            assert per["kernel_drops"] == 0
            assert per["kernel_packets"] == per["packets"]
        assert stats.packets == sum(after) - sum(before)
        assert stats.kernel_drops == 0


@needs_netns
def test_bpf_filter_runs_in_the_kernel() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        vm1 = net.add_vm("vm1", "10.77.2.1/24")
        vm2 = net.add_vm("vm2", "10.77.2.2/24")
        cfg = RingConfig(block_size=1 << 16, block_count=8, block_timeout_ms=5, bpf="udp port 5000")
        with AfPacketSource([vm1.tap_name, vm2.tap_name], cfg) as src:
            with vm2.udp_sink(5000) as s5000, vm2.udp_sink(6000) as s6000:
                vm1.send_udp(vm2.ip, 6000, count=40)
                vm1.send_udp(vm2.ip, 5000, count=30)
                vm1.send_udp(vm2.ip, 6000, count=40)
            assert (s5000.received, s6000.received) == (30, 80)
            got = capture(src, expect=60)
            stats = src.stats()
        assert [got.count(0), got.count(1)] == [30, 30]
        assert (got.udp_dport() == 5000).all()
        for name in (vm1.tap_name, vm2.tap_name):
            # the socket never saw the port-6000 datagrams: the kernel counts only accepted packets
            assert stats.per_interface[name]["kernel_packets"] == 30


@needs_netns
def test_snaplen_cuts_frames_and_keeps_wire_len() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        vm1 = net.add_vm("vm1", "10.77.3.1/24")
        vm2 = net.add_vm("vm2", "10.77.3.2/24")
        cfg = RingConfig(block_size=1 << 16, block_count=8, block_timeout_ms=5, snaplen=60)
        with AfPacketSource([vm1.tap_name], cfg) as src:
            with vm2.udp_sink(5000) as sink:
                vm1.send_udp(vm2.ip, 5000, count=20, size=1000)
            assert sink.received == 20
            got = capture(src, expect=20)
        assert len(got) == 20
        assert (got.cap_len == 60).all()
        assert (got.wire_len == 14 + 20 + 8 + 1000).all()
        assert (got.udp_dport() == 5000).all()


@needs_netns
def test_add_and_remove_interfaces_live() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        vm1 = net.add_vm("vm1", "10.77.4.1/24")
        with AfPacketSource([vm1.tap_name], SMALL) as src:
            assert src.read(0.02) is None
            late = [net.add_vm(f"vm{i}", f"10.77.4.{i}/24") for i in range(2, 7)]  # created after start
            t0 = time.monotonic()
            for vm in late:
                src.add_interface(vm.tap_name)
            assert time.monotonic() - t0 < 1.0
            src.add_interface(late[0].tap_name)  # already captured: no-op
            assert src.interfaces == [vm1.tap_name] + [v.tap_name for v in late]  # ring region grew past 4

            with vm1.udp_sink(5000) as sink:
                for vm in late:
                    vm.send_udp(vm1.ip, 5000, count=10)
            assert sink.received == 50
            got = capture(src, expect=100)
            assert [got.count(i) for i in range(6)] == [50, 10, 10, 10, 10, 10]

            src.remove_interface(vm1.tap_name)
            with pytest.raises(CaptureError):
                src.remove_interface(vm1.tap_name)
            with vm1.udp_sink(5000) as sink:
                late[1].send_udp(vm1.ip, 5000, count=7)
            got = capture(src, expect=7)
            assert src.interfaces == [v.tap_name for v in late]  # compacted by the read
            assert [got.count(i) for i in range(5)] == [0, 7, 0, 0, 0]

            # a VM that disappears while captured: reads go on, then the interface is removed
            net.remove_vm(late[4].name)
            with vm1.udp_sink(5000) as sink:
                late[0].send_udp(vm1.ip, 5000, count=3)
            got = capture(src, expect=3)
            assert got.count(0) == 3
            src.remove_interface(late[4].tap_name)
            stats = src.stats()
        assert stats.per_interface[vm1.tap_name]["packets"] == 50
        assert stats.per_interface[late[1].tap_name]["packets"] == 17
        assert stats.kernel_drops == 0


@needs_netns
def test_fanout_members_split_flows_disjointly() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        vm1 = net.add_vm("vm1", "10.77.5.1/24")
        vm2 = net.add_vm("vm2", "10.77.5.2/24")
        cfg = RingConfig(block_size=1 << 16, block_count=8, block_timeout_ms=5, fanout_group=4321)
        with AfPacketSource([vm1.tap_name], cfg) as a, AfPacketSource([vm1.tap_name], cfg) as b:
            sports = list(range(40000, 40064))
            code = (
                "import socket, sys\n"
                "for p in range(40000, 40064):\n"
                "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', p))\n"
                "    for _ in range(5): s.sendto(b'x' * 16, (sys.argv[1], 5000))\n"
            )
            with vm2.udp_sink(5000) as sink:
                vm1.python(code, vm2.ip)
            assert sink.received == 64 * 5
            with vm2.tcp_sink(5201) as tsink:
                vm1.send_tcp(vm2.ip, 5201, 300_000)
            assert tsink.received == 300_000
            time.sleep(0.05)
            got_a = capture(a)
            got_b = capture(b)
        assert len(got_a) > 0 and len(got_b) > 0
        udp_a = got_a.udp_dport() == 5000
        udp_b = got_b.udp_dport() == 5000
        assert int(udp_a.sum() + udp_b.sum()) == 64 * 5
        flows_a = set(got_a.sport()[udp_a].tolist())
        flows_b = set(got_b.sport()[udp_b].tolist())
        assert flows_a.isdisjoint(flows_b) and flows_a | flows_b == set(sports)
        # both directions of the TCP connection land in one member (symmetric hash)
        tcp_a = int(np.count_nonzero(got_a.head[:, 23] == 6))
        tcp_b = int(np.count_nonzero(got_b.head[:, 23] == 6))
        assert (tcp_a == 0) != (tcp_b == 0)
        assert len(got_a) + len(got_b) == 64 * 5 + tcp_a + tcp_b


@needs_netns
def test_vlan_tag_is_put_back_into_the_frame() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        vm1 = net.add_vm("vm1", "10.77.6.1/24")
        vm2 = net.add_vm("vm2", "10.77.6.2/24")
        dst, src_mac = bytes.fromhex(vm2.mac.replace(":", "")), bytes.fromhex(vm1.mac.replace(":", ""))
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0, bytes([10, 77, 6, 1]), bytes([10, 77, 6, 2])
        )
        frame = (
            dst
            + src_mac
            + struct.pack("!HH", 0x8100, (3 << 13) | 42)
            + b"\x08\x00"
            + ip
            + bytes(8)
            + bytes(14)
        )
        with AfPacketSource([vm1.tap_name, vm2.tap_name], SMALL) as src:
            assert vm1.send_frames(frame, count=5).wait(timeout=30) == 0
            got = capture(src, expect=10)
            stats = src.stats()
        assert [got.count(0), got.count(1)] == [5, 5]  # in on vm1's tap, out on vm2's (bridged)
        assert (got.wire_len == len(frame)).all() and (got.cap_len == len(frame)).all()
        for row in got.head:
            assert bytes(row[: len(frame)]) == frame
        assert stats.per_interface[vm1.tap_name]["vlan_restored"] == 5


@needs_netns
def test_kernel_drops_are_counted_when_the_ring_is_full() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        vm1 = net.add_vm("vm1", "10.77.7.1/24")
        vm2 = net.add_vm("vm2", "10.77.7.2/24")
        tiny = RingConfig(block_size=4096, block_count=2, frame_size=2048, block_timeout_ms=5)
        with AfPacketSource([vm1.tap_name], tiny) as src:
            with vm2.udp_sink(5000) as sink:
                vm1.send_udp(vm2.ip, 5000, count=500)  # ~30 frames fit in the ring; nobody reads
            assert sink.received == 500
            time.sleep(0.05)
            got = capture(src)
            stats = src.stats()
        per = stats.per_interface[vm1.tap_name]
        assert per["kernel_drops"] > 0
        assert per["kernel_packets"] == 500
        assert per["packets"] + per["kernel_drops"] == 500
        assert len(got) == per["packets"]


@needs_netns
def test_batches_outlive_close_without_faulting() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        vm1 = net.add_vm("vm1", "10.77.8.1/24")
        vm2 = net.add_vm("vm2", "10.77.8.2/24")
        src = AfPacketSource([vm1.tap_name], SMALL)
        with vm2.udp_sink(5000) as sink:
            vm1.send_udp(vm2.ip, 5000, count=3)
        assert sink.received == 3
        batch = None
        deadline = time.monotonic() + 3
        while batch is None and time.monotonic() < deadline:
            batch = src.read(0.05)
        assert batch is not None and len(batch) >= 1
        assert not batch.data.flags.writeable
        first = bytes(batch.data[batch.offset[0] : batch.offset[0] + 14])
        src.close()
        assert bytes(batch.data[batch.offset[0] : batch.offset[0] + 14]) == first
        assert first[:6] == bytes.fromhex(vm2.mac.replace(":", ""))


@needs_netns
def test_interfaces_change_while_another_thread_reads() -> None:
    with VirtualNetwork(prefix="ctaf") as net:
        hub = net.add_vm("hub", "10.77.10.1/24")
        vms = [net.add_vm(f"vm{i}", f"10.77.10.{i + 2}/24") for i in range(3)]
        src = AfPacketSource([hub.tap_name], SMALL)
        seen: list[int] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    batch = src.read(0.01)
                    if batch is not None:
                        names = src.interfaces  # as the agent's worker does, right after read()
                        assert int(batch.interface.max()) < len(names)
                        seen.append(len(batch))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            with hub.udp_sink(5000) as sink:
                sender = vms[0].popen(
                    [
                        sys.executable,
                        "-c",
                        "import socket,sys,time\n"
                        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                        "end=time.time()+1.0\n"
                        "while time.time()<end: s.sendto(b'x',(sys.argv[1],5000)); time.sleep(0.0005)\n",
                        hub.ip,
                    ],
                )
                for k in range(12):
                    vm = vms[k % 3]
                    src.add_interface(vm.tap_name)
                    time.sleep(0.02)
                    src.stats()
                    src.remove_interface(vm.tap_name)
                assert sender.wait(timeout=30) == 0
            time.sleep(0.1)
        finally:
            stop.set()
            thread.join(timeout=10)
            stats = src.stats()
            src.close()
        assert not errors, errors
        assert sink.received > 0
        assert stats.per_interface[hub.tap_name]["packets"] == sink.received, stats
        assert sum(seen) == stats.packets
        assert stats.kernel_drops == 0
