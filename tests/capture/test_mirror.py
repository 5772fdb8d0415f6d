"""MirrorSource tests: real kernel VXLAN devices and raw GRE/ERSPAN across a pair of network namespaces.

Namespace ``a`` (the mirroring switch) and ``b`` (the collector) are joined by a veth pair. The
collector's sockets are created inside ``b`` by a helper thread that ``setns``-es into it.
Root only; everything else is skipped.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.mirror import MirrorSource
from cloudtap.capture.mirror_config import MirrorConfig
from cloudtap.capture.source import PacketSource
from cloudtap.decode import decode_frames
from cloudtap.decode.dedup import Deduplicator
from cloudtap.errors import CaptureError, ConfigError
from cloudtap.schema.address import from_text
from cloudtap.schema.packet import (
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    PACKET_DTYPE,
    STATUS_OK,
    TUNNEL_ERSPAN1,
    TUNNEL_ERSPAN2,
    TUNNEL_ERSPAN3,
    TUNNEL_GRE,
    TUNNEL_VXLAN,
)

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)
TAG = f"ctm{os.getpid() % 10_000_000}"  # <= 10 chars: room for a 3-char suffix in IFNAMSIZ (15)

A4, A4_2, B4 = "10.77.0.1", "10.77.0.3", "10.77.0.2"
A6, B6 = "fd00:77::1", "fd00:77::2"
VNI4, VNI6 = 42, 43
INNER_MAC_B = "02:00:00:00:00:02"


# --- the lab ---------------------------------------------------------------------------------------
def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@dataclass
class Lab:
    """Two namespaces joined by a veth pair, with a VXLAN device (IPv4 and IPv6 underlay) in ``a``."""

    a: str
    b: str

    def run(self, ns: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread switched to namespace ``ns`` (sockets it opens stay there)."""
        out: dict[str, object] = {}

        def target() -> None:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            try:
                out["r"] = fn()
            except BaseException as exc:  # re-raised in the caller
                out["e"] = exc

        t = threading.Thread(target=target)
        t.start()
        t.join()
        if "e" in out:
            raise out["e"]  # type: ignore[misc]
        return out["r"]  # type: ignore[return-value]

    def source(self, config: MirrorConfig) -> MirrorSource:
        """A MirrorSource opened in the collector namespace."""
        return self.run(self.b, lambda: MirrorSource(config))


def _build_lab() -> Lab:
    a, b = f"{TAG}a", f"{TAG}b"
    va, vb, x4, x6 = f"{TAG}va", f"{TAG}vb", f"{TAG}x4", f"{TAG}x6"
    _sh("ip", "netns", "add", a)
    _sh("ip", "netns", "add", b)
    _sh("ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b)
    for ns, dev in ((a, va), (b, vb)):
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", ns, "link", "set", dev, "up")
    _sh("ip", "-n", a, "addr", "add", f"{A4}/24", "dev", va)
    _sh("ip", "-n", a, "addr", "add", f"{A4_2}/24", "dev", va)
    _sh("ip", "-n", a, "addr", "add", f"{A6}/64", "dev", va, "nodad")
    _sh("ip", "-n", b, "addr", "add", f"{B4}/24", "dev", vb)
    _sh("ip", "-n", b, "addr", "add", f"{B6}/64", "dev", vb, "nodad")
    mac_b = _sh("ip", "netns", "exec", b, "cat", f"/sys/class/net/{vb}/address").strip()
    _sh("ip", "-n", a, "neigh", "replace", B4, "lladdr", mac_b, "dev", va, "nud", "permanent")
    _sh("ip", "-n", a, "neigh", "replace", B6, "lladdr", mac_b, "dev", va, "nud", "permanent")
    vx = (
        (x4, VNI4, ["remote", B4], "192.168.42"),
        (x6, VNI6, ["remote", B6, "local", A6], "192.168.43"),
    )
    for dev, vni, remote, net in vx:
        _sh(
            "ip",
            "-n",
            a,
            "link",
            "add",
            dev,
            "type",
            "vxlan",
            "id",
            str(vni),
            *remote,
            "dstport",
            "4789",
            "dev",
            va,
        )
        # no IPv6 chatter (router/neighbour solicitations, MLD) inside the tunnel: exact counts
        _sh("ip", "netns", "exec", a, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        _sh("ip", "-n", a, "addr", "add", f"{net}.1/24", "dev", dev)
        _sh("ip", "-n", a, "link", "set", dev, "up")
        _sh(
            "ip",
            "-n",
            a,
            "neigh",
            "replace",
            f"{net}.2",
            "lladdr",
            INNER_MAC_B,
            "dev",
            dev,
            "nud",
            "permanent",
        )
    return Lab(a, b)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespaces)")
    try:
        built = _build_lab()
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        _teardown()
        pytest.skip(f"cannot build the namespace lab: {detail}")
    try:
        yield built
    finally:
        _teardown()


def _teardown() -> None:
    for ns in (f"{TAG}a", f"{TAG}b"):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --- senders (run inside namespace a) ------------------------------------------------------------
def _udp_send(dst: str, port: int, payloads: list[bytes], src: tuple[str, int]) -> Callable[[], None]:
    def send() -> None:
        fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.bind(src)
            for p in payloads:
                s.sendto(p, (dst, port))

    return send


def _gre_socket(src: str) -> socket.socket:
    """Raw GRE socket bound to ``src``: the kernel adds the outer IP header to what is sent."""
    s = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    s.bind((src, 0))
    return s


def _gre_send(src: str, dst: str, payloads: list[bytes]) -> Callable[[], None]:
    """Send GRE packets (GRE header onwards) from ``src`` to ``dst``."""

    def send() -> None:
        with _gre_socket(src) as s:
            for p in payloads:
                s.sendto(p, (dst, 0))

    return send


# --- GRE / ERSPAN builders -------------------------------------------------------------------------
def inner(i: int, ttl: int = 64, sport: int = 40000) -> Packet:
    return (
        Ether(src="02:00:00:00:00:01", dst=INNER_MAC_B)
        / IP(src="10.1.0.1", dst="10.1.0.2", ttl=ttl, id=i)
        / TCP(sport=sport, dport=443, seq=1000 + i * 100, ack=7, flags="PA")
        / (b"d" * (10 + i))
    )


def gre_erspan1(frame: bytes, key: int) -> bytes:
    """ERSPAN type I: GRE 0x88BE without sequence number; here with a key (the decoder's tunnel id)."""
    return struct.pack("!BBHI", 0x20, 0, 0x88BE, key) + frame


def gre_erspan2(frame: bytes, session: int, seq: int) -> bytes:
    hdr = struct.pack("!HHI", (1 << 12) | 10, (0 << 13) | session, 0)  # ver 1, VLAN 10
    return struct.pack("!BBHI", 0x10, 0, 0x88BE, seq) + hdr + frame


def gre_erspan3(frame: bytes, session: int, seq: int) -> bytes:
    hdr = struct.pack("!HHIHH", (2 << 12) | 10, session, 0x01020304, 0, 0)  # ft 0: Ethernet
    return struct.pack("!BBHI", 0x10, 0, 0x22EB, seq) + hdr + frame


def gre_teb(frame: bytes, key: int) -> bytes:
    return struct.pack("!BBHI", 0x20, 0, 0x6558, key) + frame


# --- receive helpers -----------------------------------------------------------------------------
def drain(src: MirrorSource, expect: int, deadline_s: float = 3.0) -> tuple[np.ndarray, list[FrameBatch]]:
    """Read until ``expect`` frames arrived (or the deadline), then check nothing more comes.

    Returns the decoded rows of all batches and copies of the batches.
    """
    rows, batches = [], []
    got = 0
    end = time.monotonic() + deadline_s
    while got < expect and time.monotonic() < end:
        fb = src.read(0.2)
        if fb is None:
            continue
        fb = _copy(fb)
        batches.append(fb)
        rows.append(decode_frames(fb))
        got += len(fb)
    assert src.read(0.05) is None, "more frames than were sent"
    out = np.concatenate(rows) if rows else np.zeros(0, PACKET_DTYPE)
    return out, batches


def _copy(fb: FrameBatch) -> FrameBatch:
    """Compact copy of a batch (the source reuses its buffer)."""
    parts = [fb.data[o : o + c] for o, c in zip(fb.offset.tolist(), fb.cap_len.tolist(), strict=True)]
    offs = np.cumsum([0] + [len(p) for p in parts[:-1]]).astype(np.int64)
    return FrameBatch(
        np.concatenate(parts),
        offs,
        fb.cap_len.copy(),
        fb.wire_len.copy(),
        fb.ts_ns.copy(),
        fb.linktype.copy(),
        fb.interface.copy(),
    )


def _addr(text: str) -> tuple[int, int]:
    return from_text(text)


RECV_MODES = [pytest.param(True, id="recvmmsg"), pytest.param(False, id="recvmsg")]


# --- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_mmsg", RECV_MODES)
@pytest.mark.parametrize("v6", [False, True], ids=["underlay4", "underlay6"])
def test_vxlan_from_kernel_device(lab: Lab, v6: bool, use_mmsg: bool) -> None:
    """UDP sent across a real Linux VXLAN device arrives decoded with its VNI, exactly once each."""
    n = 64
    net, vni, bind, sender = ("192.168.43", VNI6, B6, A6) if v6 else ("192.168.42", VNI4, B4, A4)
    t0 = time.time_ns()
    src = lab.source(MirrorConfig(kind="vxlan", bind=bind, batch=16, use_recvmmsg=use_mmsg))
    try:
        assert isinstance(src, PacketSource)
        payloads = [bytes([i]) * i for i in range(n)]
        lab.run(lab.a, _udp_send(f"{net}.2", 9999, payloads, (f"{net}.1", 5555)))
        rows, batches = drain(src, n)
        stats = src.stats()
    finally:
        src.close()
    assert len(rows) == n
    assert max(len(b) for b in batches) <= 16
    assert (rows["status"] == STATUS_OK).all()
    assert (rows["tunnel_type"] == TUNNEL_VXLAN).all() and (rows["tunnel_id"] == vni).all()
    assert (rows["src_lo"] == _addr(f"{net}.1")[1]).all() and (rows["dst_lo"] == _addr(f"{net}.2")[1]).all()
    assert (rows["proto"] == 17).all() and (rows["sport"] == 5555).all() and (rows["dport"] == 9999).all()
    assert rows["dst_mac"][0] == 0x020000000002
    assert sorted(rows["payload_len"].tolist()) == list(range(n))
    hi, lo = _addr(sender)
    assert (rows["tunnel_src_hi"] == hi).all() and (rows["tunnel_src_lo"] == lo).all()
    hi, lo = _addr(bind)
    assert (rows["tunnel_dst_hi"] == hi).all() and (rows["tunnel_dst_lo"] == lo).all()
    lt = LINKTYPE_IPV6 if v6 else LINKTYPE_IPV4
    assert all((b.linktype == lt).all() for b in batches)
    ts = np.concatenate([b.ts_ns for b in batches])
    assert (np.diff(ts) >= 0).all() and t0 - 10**9 < ts[0] <= time.time_ns()
    outer = 48 if v6 else 28
    # wire = synthetic outer IP+UDP, VXLAN 8, Ethernet 14, inner IPv4 20 + UDP 8, payload
    assert sorted(rows["wire_len"].tolist()) == [outer + 8 + 14 + 28 + i for i in range(n)]
    assert stats.packets == n and stats.bytes == int(rows["wire_len"].sum())
    assert stats.kernel_drops == 0 and stats.errors == 0
    assert list(stats.per_interface) == [f"vxlan@{bind}:4789"]


@pytest.mark.parametrize("use_mmsg", RECV_MODES)
@pytest.mark.parametrize("kind", ["gre", "erspan"])
def test_gre_erspan_and_teb(lab: Lab, kind: str, use_mmsg: bool) -> None:
    """ERSPAN I/II/III and GRE-TEB built in user space arrive as outer IPv4 packets and decode."""
    m = 20
    sent: list[bytes] = []
    for i in range(m):
        f = raw(inner(i))
        sent += [gre_erspan1(f, 7), gre_erspan2(f, 101, i), gre_erspan3(f, 202, i), gre_teb(f, 0xABCD)]
    src = lab.source(MirrorConfig(kind=kind, bind=B4, use_recvmmsg=use_mmsg))
    try:
        lab.run(lab.a, _gre_send(A4, B4, sent))
        rows, batches = drain(src, len(sent))
        stats = src.stats()
    finally:
        src.close()
    assert len(rows) == len(sent) == stats.packets
    assert (rows["status"] == STATUS_OK).all()
    assert all((b.linktype == LINKTYPE_IPV4).all() for b in batches)
    kinds = {
        (TUNNEL_ERSPAN1, 7): 0,
        (TUNNEL_ERSPAN2, 101): 0,
        (TUNNEL_ERSPAN3, 202): 0,
        (TUNNEL_GRE, 0xABCD): 0,
    }
    for t, k in zip(rows["tunnel_type"].tolist(), rows["tunnel_id"].tolist(), strict=True):
        kinds[(t, k)] += 1
    assert set(kinds.values()) == {m}
    assert (rows["src_lo"] == _addr("10.1.0.1")[1]).all() and (rows["dst_lo"] == _addr("10.1.0.2")[1]).all()
    assert (rows["proto"] == 6).all() and (rows["sport"] == 40000).all() and (rows["dport"] == 443).all()
    assert (rows["tunnel_src_lo"] == _addr(A4)[1]).all() and (rows["tunnel_dst_lo"] == _addr(B4)[1]).all()
    assert sorted(set(rows["tcp_seq"].tolist())) == [1000 + i * 100 for i in range(m)]
    assert (rows["vlan"] == 0).all()  # the ERSPAN VLAN field is metadata, not an inner tag
    assert stats.bytes == int(rows["wire_len"].sum()) == sum(20 + len(p) for p in sent)


def test_gre_over_ipv6_gets_a_synthetic_ipv6_header(lab: Lab) -> None:
    """An IPv6 raw socket has no IP header: the source writes one (sender as source)."""
    sent = [gre_erspan2(raw(inner(i)), 33, i) for i in range(10)]
    src = lab.source(MirrorConfig(kind="gre", bind=B6))
    try:
        lab.run(lab.a, _gre_send(A6, B6, sent))
        rows, batches = drain(src, len(sent))
    finally:
        src.close()
    assert len(rows) == 10 and (rows["status"] == STATUS_OK).all()
    assert (batches[0].linktype == LINKTYPE_IPV6).all()
    assert (rows["tunnel_type"] == TUNNEL_ERSPAN2).all() and (rows["tunnel_id"] == 33).all()
    hi, lo = _addr(A6)
    assert (rows["tunnel_src_hi"] == hi).all() and (rows["tunnel_src_lo"] == lo).all()
    assert sorted(rows["payload_len"].tolist()) == [10 + i for i in range(10)]
    assert sorted(rows["wire_len"].tolist()) == sorted(40 + len(p) for p in sent)


def test_mirrored_twice_then_deduplicated(lab: Lab) -> None:
    """Both ends mirrored: session 1 from one switch, session 2 (TTL - 1) from another -> one copy kept."""
    n = 30
    first = [gre_erspan2(raw(inner(i)), 1, i) for i in range(n)]
    second = [gre_erspan3(raw(inner(i, ttl=63)), 2, i) for i in range(n)]
    src = lab.source(MirrorConfig(kind="gre", bind=B4))
    try:

        def send_interleaved() -> None:  # as two mirror sessions would deliver them
            with _gre_socket(A4) as s1, _gre_socket(A4_2) as s2:
                for a, b in zip(first, second, strict=True):
                    s1.sendto(a, (B4, 0))
                    s2.sendto(b, (B4, 0))

        lab.run(lab.a, send_interleaved)
        rows, batches = drain(src, 2 * n)
    finally:
        src.close()
    assert len(rows) == 2 * n
    assert sorted(set(rows["tunnel_src_lo"].tolist())) == sorted({_addr(A4)[1], _addr(A4_2)[1]})
    dedup = Deduplicator(window_ns=10**9)
    keep = np.concatenate([dedup.mask(fb, decode_frames(fb)) for fb in batches])
    assert (dedup.duplicates, dedup.passed) == (n, n)
    kept = rows[keep]
    assert sorted(kept["tcp_seq"].tolist()) == [1000 + i * 100 for i in range(n)]
    assert (kept["tunnel_id"] == 1).all()  # the first copy of each packet is the one kept


@pytest.mark.parametrize("kind,use_mmsg", [("gre", True), ("vxlan", False)])
def test_snaplen_cuts_but_keeps_lengths(lab: Lab, kind: str, use_mmsg: bool) -> None:
    """A datagram longer than ``snaplen`` is cut; ``wire_len`` and the decoded lengths stay true."""
    frame = raw(inner(0) / (b"x" * 1200))
    src = lab.source(MirrorConfig(kind=kind, bind=B4, snaplen=128, use_recvmmsg=use_mmsg))
    try:
        if kind == "gre":
            pkt = gre_erspan2(frame, 5, 1)
            lab.run(lab.a, _gre_send(A4, B4, [pkt]))
            prefix, wire = 0, 20 + len(pkt)
        else:
            pkt = struct.pack("!II", 0x08000000, 5 << 8) + frame
            lab.run(lab.a, _udp_send(B4, 4789, [pkt], (A4, 40000)))
            prefix, wire = 28, 28 + len(pkt)
        rows, batches = drain(src, 1)
    finally:
        src.close()
    assert len(rows) == 1
    assert batches[0].cap_len[0] == 128 + prefix and batches[0].wire_len[0] == wire
    assert rows["status"][0] == STATUS_OK and rows["payload_len"][0] == 10 + 1200
    assert rows["sport"][0] == 40000 and rows["dport"][0] == 443 and rows["tunnel_id"][0] == 5


def test_custom_port_and_kernel_drops(lab: Lab) -> None:
    """VXLAN from any sender on a non-default port; a full socket buffer shows up as kernel_drops."""
    n = 300
    vx = struct.pack("!II", 0x08000000, 777 << 8)
    payloads = [
        vx + raw(Ether(dst=INNER_MAC_B) / IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=i, dport=53))
        for i in range(1, n + 1)
    ]
    src = lab.source(MirrorConfig(kind="vxlan", bind=B4, port=14789, recv_buffer=1))
    try:
        lab.run(lab.a, _udp_send(B4, 14789, payloads, (A4, 40404)))
        rows, _ = drain(src, n, deadline_s=0.5)
        stats = src.stats()
    finally:
        src.close()
    assert 0 < len(rows) < n
    assert stats.kernel_drops > 0 and stats.packets + stats.kernel_drops == n
    assert (rows["tunnel_type"] == TUNNEL_VXLAN).all() and (rows["tunnel_id"] == 777).all()
    assert (rows["tunnel_src_lo"] == _addr(A4)[1]).all() and (rows["dport"] == 53).all()
    assert src.stats().kernel_drops == stats.kernel_drops  # kept after close


def test_timeout_close_and_errors(lab: Lab) -> None:
    src = lab.source(MirrorConfig(kind="vxlan", bind=B4, port=24789))
    assert src.address == (B4, 24789)
    t = time.monotonic()
    assert src.read(0.05) is None
    assert time.monotonic() - t >= 0.04
    assert src.read(0) is None
    src.close()
    src.close()
    with pytest.raises(CaptureError):
        src.read(0)
    with pytest.raises(CaptureError):  # not a local address of namespace b
        lab.source(MirrorConfig(kind="gre", bind="203.0.113.9"))


def test_config_validation() -> None:
    assert MirrorConfig(kind="ERSPAN").kind == "gre"
    assert MirrorConfig(kind="vxlan", bind="::").family == socket.AF_INET6
    for bad in (
        {"kind": "geneve"},
        {"kind": "vxlan", "bind": "eth0"},
        {"kind": "vxlan", "port": 0},
        {"kind": "vxlan", "batch": 0},
        {"kind": "vxlan", "snaplen": 10},
        {"kind": "vxlan", "recv_buffer": -1},
    ):
        with pytest.raises(ConfigError):
            MirrorConfig(**bad)


def test_bind_failure_is_a_capture_error() -> None:
    with pytest.raises(CaptureError):
        MirrorSource(MirrorConfig(kind="vxlan", bind="203.0.113.9", port=4789))
