"""Fuzzing the decoder: mutated real packets and random bytes never crash it or make it read
outside the frame.

Out-of-bounds reads are caught by decoding through a copy of the kernel module compiled with
``boundscheck=True`` (numba skips bounds checks otherwise), with every frame placed at the very
end of its own buffer: any read past the captured bytes indexes past the array and raises.
"""

from __future__ import annotations

import importlib
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import GRE, GRE_PPTP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.sctp import SCTP
from scapy.layers.vxlan import VXLAN
from scapy.packet import raw
from scapy.utils import RawPcapReader

import cloudtap._kernel_opts as kernel_opts
import cloudtap.decode._kernels as prod_kernels
from cloudtap.capture.frames import FrameBatch
from cloudtap.decode import DecodeConfig, decode_frames
from cloudtap.decode._walk import MAX_TUNNEL_DEPTH
from cloudtap.decode.decode import _port_table
from cloudtap.schema.packet import FLAG_L4, PACKET_DTYPE, STATUS_NAMES

PCAPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"
GUARD = 16  # bytes before the frame, so the frame is not at index 0 either
PORTS = _port_table(*DecodeConfig().port_lists().values())
EDIT_VALUES = [0, 1, 4, 5, 20, 40, 0x0800, 0x86DD, 0x8100, 0x6558, 0x88BE, 0x8926, 0x893F, 0xD28B, 2152, 3544,
               0xFFFF]  # fmt: skip
LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 9, 50, 239, 147)
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _inner(ver: int = 4):
    ip = IP(src="10.0.0.1", dst="10.0.0.2") if ver == 4 else IPv6(src="fd00::1", dst="fd00::2")
    return ip / TCP(sport=1, dport=2, flags="S") / b"payload"


def _outer():
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2")


_TEREDO_AUTH = b"\x00\x01\x01\x02" + b"iaa" + b"n" * 8 + b"\x00"
_TEREDO_ORIGIN = b"\x00\x00\x63\xbf" + b"\x3f\x57\xfe\x99"


def _nflog(family: int, packet: bytes, order: str) -> bytes:
    """NFLOG frame: header, a packet-header TLV, then the payload TLV (type 9), in byte order ``order``."""
    hdr = struct.pack(order + "HH", 8, 1) + b"\x08\x00\x03\x00"
    return bytes([family, 0, 0, 1]) + hdr + struct.pack(order + "HH", 4 + len(packet), 9) + packet


def _seed_frames() -> list[tuple[int, bytes]]:
    """(linktype, frame) for every encapsulation the decoder knows."""
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pkts = [
        e / _inner(),
        e / _inner(6),
        e / Dot1Q(vlan=1) / _inner(),
        e / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / _inner(6),
        e / MPLS(s=0) / MPLS(s=1) / _inner(),
        e / MPLS(s=1) / (b"\0\0\0\0" + raw(e / _inner())),
        e / PPPoE() / PPP(proto=0x21) / _inner(),
        e / IP(options=[IPOption_RR(routers=["1.1.1.1"])]) / UDP(sport=5, dport=6),
        e
        / IPv6()
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=["fd00::9"])
        / IPv6ExtHdrDestOpt()
        / TCP(),
        e / IPv6() / IPv6ExtHdrFragment(offset=0, m=1, id=5) / UDP(),
        e / IPv6() / IPv6ExtHdrFragment(offset=9, m=0, id=5) / (b"x" * 16),
        e / IP(flags="MF", id=3) / UDP() / (b"x" * 20),
        e / IP(frag=5, id=3) / (b"x" * 20),
        e / IP() / ICMP(type=8) / b"ping",
        e / IP() / ICMP(type=3, code=1) / _inner(),
        e / IPv6() / ICMPv6EchoRequest(),
        e / IP() / SCTP(sport=1, dport=2),
        _outer() / UDP(dport=4789) / VXLAN(vni=1) / e / Dot1Q(vlan=4) / _inner(),
        _outer() / UDP(dport=8472) / VXLAN(vni=2) / e / _inner(6),
        _outer()
        / UDP(dport=6081)
        / GENEVE(proto=0x6558, options=[GeneveOptions(data=b"abcd")])
        / e
        / _inner(),
        _outer() / UDP(dport=6081) / GENEVE(proto=0x0800) / _inner(),
        _outer() / GRE(key_present=1, key=9, seqnum_present=1, proto=0x0800) / _inner(),
        _outer() / GRE(chksum_present=1, proto=0x6558) / e / _inner(6),
        _outer() / GRE(proto=0x88BE) / e / _inner(),
        _outer() / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II(session_id=3) / e / _inner(),
        _outer() / GRE(proto=0x22EB) / ERSPAN_III(o=1) / ERSPAN_PlatformSpecific() / e / _inner(),
        _outer() / GRE_PPTP(call_id=4) / PPP(proto=0x21) / _inner(),
        _outer() / GRE(proto=0x8847) / MPLS(s=1) / _inner(),
        e / IP(proto=4) / _inner(),
        e / IP(proto=41) / _inner(6),
        e / IPv6(nh=4) / _inner(),
        e / IPv6(nh=41) / _inner(6),
        _outer() / GRE(proto=0x0800) / IP() / UDP(dport=4789) / VXLAN() / e / _inner(),
        # VN-Tag, 802.1BR E-tag, UDP tunnels, PPTP with an ack number, ERSPAN carrying VXLAN
        Ether(type=0x8926) / b"\x80\x01\x00\x02\x81\x00" / Dot1Q(vlan=5) / _inner(),
        Ether(type=0x893F) / b"\x00\x00\x10\x01\x00\x00\x86\xdd" / _inner(6),
        Ether(type=0xD28B) / b"\x00\x01\x00\x10" / (b"t" * 8) / b"\x88\x47" / MPLS(s=1) / _inner(),
        _outer() / UDP(dport=4754) / GRE(proto=0x0800, key_present=1, key=3) / _inner(),
        _outer() / UDP(dport=4754) / GRE(proto=0x6558) / e / _inner(6),
        _outer() / UDP(dport=6635) / MPLS(s=0) / MPLS(s=1) / _inner(),
        _outer() / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=1) / _inner(),
        _outer()
        / UDP(sport=2152, dport=2152)
        / GTP_U_Header(teid=2, E=1, next_ex=0x85)
        / GTPPDUSessionContainer(type=1, QFI=3)
        / _inner(6),
        _outer() / UDP(sport=3544, dport=9) / _inner(6),
        _outer() / UDP(sport=9, dport=3544) / (_TEREDO_AUTH + _TEREDO_ORIGIN) / _inner(6),
        _outer() / GRE_PPTP(call_id=4, seqnum_present=1, acknum_present=1) / PPP(proto=0x57) / _inner(6),
        _outer()
        / GRE(proto=0x88BE, seqnum_present=1)
        / ERSPAN_II(session_id=3)
        / e
        / IP()
        / UDP(dport=4789)
        / VXLAN(vni=4)
        / e
        / _inner(),
    ]
    seeds = [(1, raw(p)) for p in pkts]
    seeds += [
        (113, raw(CookedLinux(proto=0x0800) / _inner())),
        (276, raw(CookedLinuxV2(proto=0x86DD) / _inner(6))),
        (101, raw(_inner())),
        (228, raw(_inner())),
        (229, raw(_inner(6))),
        (0, b"\x02\x00\x00\x00" + raw(_inner())),
        (108, b"\x00\x00\x00\x1e" + raw(_inner(6))),
        (9, b"\xff\x03\x00\x21" + raw(_inner())),
        (239, _nflog(2, raw(_inner()), "<")),
        (239, _nflog(10, raw(_inner(6)), ">")),
    ]
    return seeds


def _real_seeds() -> list[tuple[int, bytes]]:
    """A few frames from real captures with tunnels, when the shared captures are present."""
    files = [
        "tcpdump/tests/vxlan.pcap",
        "tcpdump/tests/geneve.pcap",
        "tcpdump/tests/erspan-type-iii-ft-0.pcap",
        "zeek/testing/btest/Traces/tunnels/gre-sample.pcap",
        "zeek/testing/btest/Traces/mpls-in-vlan.pcap",
        "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/sll2.pcap",
        "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/ip6_fragments.pcap",
        "zeek/testing/btest/Traces/tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap",
        "tcpdump/tests/nflog.pcap",
        "tcpdump/tests/arista_ether.pcap",
        "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/GrePackets.cap",
        "deepflow/agent/resources/test/common/decapsulate_test.pcap",
    ]
    out: list[tuple[int, bytes]] = []
    for rel in files:
        path = PCAPS / rel
        if not path.is_file():
            continue
        with RawPcapReader(str(path)) as reader:
            for k, (data, _meta) in enumerate(reader):
                if k >= 3:
                    break
                out.append((reader.linktype, data[:600]))
    return out


SYNTHETIC_SEEDS = _seed_frames()
SEEDS = SYNTHETIC_SEEDS + _real_seeds()


#: The walker modules, lower layers first: every one is compiled again for the bounds-checked build.
WALKER_MODULES = (
    "cloudtap.decode._walk",
    "cloudtap.decode._link_kernels",
    "cloudtap.decode._ip_kernels",
    "cloudtap.decode._tunnel_kernels",
    "cloudtap.decode._kernels",
)


@pytest.fixture(scope="module")
def checked():
    """The walker modules compiled again with ``boundscheck=True`` and no cache: their driver and a read.

    Each module is imported afresh while ``KERNEL_OPTS`` is patched, so the driver inlines and calls
    checked layers, not the cached production ones; ``sys.modules`` is restored afterwards.
    """
    with pytest.MonkeyPatch.context() as mp:
        for opts in (kernel_opts.KERNEL_OPTS, kernel_opts.NO_ALLOC_OPTS):
            mp.setitem(opts, "boundscheck", True)
            mp.setitem(opts, "cache", False)
        for name in WALKER_MODULES:
            mp.delitem(sys.modules, name, raising=False)
        driver = importlib.import_module("cloudtap.decode._kernels")
        walk = importlib.import_module("cloudtap.decode._walk")
    assert sys.modules["cloudtap.decode._kernels"] is prod_kernels
    assert driver._ethernet is not prod_kernels._ethernet and driver._gre is not prod_kernels._gre
    return SimpleNamespace(decode_batch=driver.decode_batch, _u16=walk._u16)


def guarded_batch(linktype: int, frame: bytes, wire: int | None = None) -> FrameBatch:
    """One frame placed at the very end of its own buffer."""
    return FrameBatch(
        data=np.frombuffer(b"\xa5" * GUARD + frame, dtype=np.uint8),
        offset=np.array([GUARD], np.int64),
        cap_len=np.array([len(frame)], np.uint32),
        wire_len=np.array([len(frame) if wire is None else wire], np.uint32),
        ts_ns=np.zeros(1, np.int64),
        linktype=np.array([linktype], np.uint16),
        interface=np.zeros(1, np.uint16),
    )


def decode_guarded(module, linktype: int, frame: bytes, wire: int | None = None) -> np.ndarray:
    """Decode one guarded frame with ``module.decode_batch`` (the production or the checked one)."""
    batch = guarded_batch(linktype, frame, wire)
    if module is prod_kernels:
        return decode_frames(batch)
    out = np.zeros(1, dtype=PACKET_DTYPE)
    module.decode_batch(
        batch.data,
        batch.offset,
        batch.cap_len,
        batch.wire_len,
        batch.ts_ns,
        batch.linktype,
        batch.interface,
        PORTS,
        MAX_TUNNEL_DEPTH,
        out,
        np.zeros(len(STATUS_NAMES), np.int64),
    )
    return out


def check_row(row: np.ndarray, frame: bytes) -> None:
    cap = len(frame)
    assert row["cap_len"] == cap
    assert row["status"] < len(STATUS_NAMES)
    assert row["tunnel_depth"] <= MAX_TUNNEL_DEPTH
    if row["ip_ver"]:
        assert row["ip_ver"] in (4, 6)
        assert row["l3_offset"] < cap
    else:
        assert row["l3_offset"] == 0
    if row["l4_offset"]:
        assert row["l3_offset"] < row["l4_offset"] < cap
    if row["flags"] & FLAG_L4:
        need = {6: 20, 17: 8, 136: 8, 1: 4, 58: 4, 132: 12, 33: 12}[int(row["proto"])]
        assert row["l4_offset"] + need <= cap


def check_frame(module, linktype: int, frame: bytes, wire: int | None = None) -> None:
    guarded = decode_guarded(module, linktype, frame, wire)
    check_row(guarded[0], frame)
    plain = decode_guarded(prod_kernels, linktype, frame, wire)
    assert guarded.tobytes() == plain.tobytes()


def test_boundscheck_variant_really_checks(checked):
    with pytest.raises(IndexError):
        checked._u16(np.zeros(1, np.uint8), 0)


def test_seeds_decode_cleanly(checked):
    assert len(SYNTHETIC_SEEDS) == 55
    for linktype, frame in SYNTHETIC_SEEDS:
        row = decode_guarded(checked, linktype, frame)[0]
        check_row(row, frame)
        assert row["status"] == 0, (linktype, frame.hex())
        assert row["ip_ver"] in (4, 6)
    for linktype, frame in SEEDS[len(SYNTHETIC_SEEDS) :]:
        check_row(decode_guarded(checked, linktype, frame)[0], frame)


def test_every_truncation_of_every_seed(checked):
    for linktype, frame in SEEDS:
        for cut in range(len(frame) + 1):
            check_frame(checked, linktype, frame[:cut], wire=len(frame))


@st.composite
def mutated(draw):
    linktype, frame = draw(st.sampled_from(SEEDS))
    buf = bytearray(frame)
    row = decode_guarded(prod_kernels, linktype, frame)[0]
    l3, l4 = int(row["l3_offset"]), int(row["l4_offset"])
    hot = [l3 + k for k in (0, 2, 4, 6, 9)] + [l4 + k for k in (0, 4, 12)]
    for _ in range(draw(st.integers(0, 6))):  # bit flips anywhere
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
    for _ in range(draw(st.integers(0, 3))):  # 16-bit length/type field edits near headers
        pos = draw(st.one_of(st.sampled_from(hot), st.integers(0, max(len(buf) - 2, 0))))
        value = draw(st.sampled_from(EDIT_VALUES) | st.integers(0, 0xFFFF))
        if pos + 2 <= len(buf):
            buf[pos : pos + 2] = value.to_bytes(2, "big")
    cut = draw(st.integers(0, len(buf)))
    wire = draw(st.sampled_from([len(buf), cut, 0, 65535]))
    return linktype, bytes(buf[:cut]), wire


@settings(FUZZ, max_examples=1500)
@given(case=mutated())
def test_mutated_packets(checked, case):
    linktype, frame, wire = case
    check_frame(checked, linktype, frame, wire)


@settings(FUZZ, max_examples=500)
@given(linktype=st.sampled_from(LINKTYPES), frame=st.binary(max_size=160))
def test_random_bytes_under_each_linktype(checked, linktype, frame):
    check_frame(checked, linktype, frame)
