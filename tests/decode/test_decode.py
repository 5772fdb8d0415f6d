"""Decoder tests: scapy-built frames for every encapsulation, and tshark on real captures."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import (
    ARP,
    GRE,
    GRE_PPTP,
    LLC,
    SNAP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Dot3,
    Ether,
)
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.sctp import SCTP
from scapy.layers.vxlan import VXLAN
from scapy.packet import raw
from scapy.utils import RawPcapNgReader, RawPcapReader

from cloudtap.capture.frames import FrameBatch
from cloudtap.decode import DecodeConfig, decode_counts, decode_frames
from cloudtap.errors import ConfigError
from cloudtap.schema.address import from_text, to_text
from cloudtap.schema.packet import (
    FLAG_FRAGMENT,
    FLAG_L4,
    FLAG_LATER_FRAGMENT,
    FLAG_MORE_FRAGMENTS,
    FLAG_TUNNEL,
    PACKET_DTYPE,
    STATUS_MALFORMED,
    STATUS_NOT_IP,
    STATUS_OK,
    STATUS_TRUNCATED,
    STATUS_UNKNOWN_LINKTYPE,
    TCP_ACK,
    TCP_SYN,
    TUNNEL_ERSPAN1,
    TUNNEL_ERSPAN2,
    TUNNEL_ERSPAN3,
    TUNNEL_GENEVE,
    TUNNEL_GRE,
    TUNNEL_IPIP,
    TUNNEL_NONE,
    TUNNEL_VXLAN,
)

PCAPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"
OUTER4 = ("192.0.2.1", "192.0.2.2")
OUTER6 = ("2001:db8::1", "2001:db8::2")
INNER4 = ("10.0.0.1", "10.0.0.2")
INNER6 = ("fd00::1", "fd00::2")


# --- helpers ---------------------------------------------------------------------------------------
def make_batch(
    frames: list[bytes], linktype: int | list[int] = 1, wire: list[int] | None = None
) -> FrameBatch:
    """FrameBatch holding ``frames`` back to back."""
    n = len(frames)
    lens = np.array([len(f) for f in frames], dtype=np.uint32)
    offset = np.zeros(n, dtype=np.int64)
    if n:
        offset[1:] = np.cumsum(lens, dtype=np.int64)[:-1]
    lts = np.broadcast_to(np.asarray(linktype, dtype=np.uint16), (n,)).copy()
    return FrameBatch(
        data=np.frombuffer(b"".join(frames), dtype=np.uint8),
        offset=offset,
        cap_len=lens,
        wire_len=lens.copy() if wire is None else np.array(wire, dtype=np.uint32),
        ts_ns=np.arange(n, dtype=np.int64) * 1000 + 7,
        linktype=lts,
        interface=np.zeros(n, dtype=np.uint16),
    )


def decode_one(frame, linktype: int = 1, config: DecodeConfig | None = None, wire: int | None = None):
    """Decode a single frame (scapy packet or bytes) and return its row."""
    data = frame if isinstance(frame, bytes) else raw(frame)
    batch = make_batch([data], linktype, None if wire is None else [wire])
    return decode_frames(batch, config or DecodeConfig())[0]


def assert_addrs(row, src: str, dst: str, prefix: str = "") -> None:
    assert (int(row[prefix + "src_hi"]), int(row[prefix + "src_lo"])) == from_text(src)
    assert (int(row[prefix + "dst_hi"]), int(row[prefix + "dst_lo"])) == from_text(dst)


def assert_tunnel(row, ttype: int, tid: int, outer: tuple[str, str], depth: int = 1) -> None:
    assert row["tunnel_type"] == ttype
    assert row["tunnel_id"] == tid
    assert row["tunnel_depth"] == depth
    assert row["flags"] & FLAG_TUNNEL
    assert_addrs(row, *outer, prefix="tunnel_")


def inner_tcp(ver: int = 4, sport: int = 40000, dport: int = 443):
    ip = IP(src=INNER4[0], dst=INNER4[1]) if ver == 4 else IPv6(src=INNER6[0], dst=INNER6[1])
    return ip / TCP(sport=sport, dport=dport, flags="PA", seq=1000, ack=2000) / (b"x" * 10)


def eth(src: str = "02:00:00:00:00:01", dst: str = "02:00:00:00:00:02", **fields):
    return Ether(src=src, dst=dst, **fields)


def assert_inner_tcp(row, ver: int = 4) -> None:
    assert row["status"] == STATUS_OK
    assert row["ip_ver"] == ver
    assert_addrs(row, *(INNER4 if ver == 4 else INNER6))
    assert (row["proto"], row["sport"], row["dport"]) == (6, 40000, 443)
    assert row["flags"] & FLAG_L4
    assert row["payload_len"] == 10
    assert row["ip_len"] == (50 if ver == 4 else 70)


# --- Ethernet / IPv4 / TCP and the row bookkeeping -------------------------------------------------
def test_ethernet_ipv4_tcp_fields():
    pkt = (
        eth()
        / IP(src="1.2.3.4", dst="5.6.7.8", id=77)
        / TCP(sport=1234, dport=80, seq=0xDEADBEEF, ack=42, flags="SA", window=4321)
        / (b"a" * 26)
    )
    row = decode_one(pkt)
    assert row["status"] == STATUS_OK
    assert_addrs(row, "1.2.3.4", "5.6.7.8")
    assert (row["ip_ver"], row["proto"], row["sport"], row["dport"]) == (4, 6, 1234, 80)
    assert (row["tcp_seq"], row["tcp_ack"], row["tcp_win"]) == (0xDEADBEEF, 42, 4321)
    assert row["tcp_flags"] == TCP_SYN | TCP_ACK
    assert (row["ip_len"], row["payload_len"]) == (66, 26)
    assert (row["l3_offset"], row["l4_offset"]) == (14, 34)
    assert row["flags"] == FLAG_L4
    assert row["frag_id"] == 77
    assert row["src_mac"] == 0x020000000001 and row["dst_mac"] == 0x020000000002
    assert (row["wire_len"], row["cap_len"], row["frame_index"], row["ts_ns"]) == (80, 80, 0, 7)
    assert (row["tunnel_type"], row["tunnel_depth"], row["vlan"]) == (TUNNEL_NONE, 0, 0)


def test_batch_rows_follow_frames_and_out_is_reused():
    frames = [raw(eth() / inner_tcp()), raw(eth() / ARP()), raw(eth() / inner_tcp(6))]
    batch = make_batch(frames)
    out = np.zeros(5, dtype=PACKET_DTYPE)
    rows = decode_frames(batch, out=out)
    assert rows.base is out or np.shares_memory(rows, out)
    assert rows.shape == (3,)
    assert list(rows["frame_index"]) == [0, 1, 2]
    assert list(rows["status"]) == [STATUS_OK, STATUS_NOT_IP, STATUS_OK]
    assert list(rows["ip_ver"]) == [4, 0, 6]
    assert list(rows["ts_ns"]) == [7, 1007, 2007]
    assert decode_counts(rows) == {
        "ok": 2,
        "not_ip": 1,
        "truncated": 0,
        "malformed": 0,
        "unknown_linktype": 0,
    }


def test_bad_out_and_empty_batch():
    batch = make_batch([raw(eth() / inner_tcp())])
    with pytest.raises(ValueError):
        decode_frames(batch, out=np.zeros(0, dtype=PACKET_DTYPE))
    with pytest.raises(ValueError):
        decode_frames(batch, out=np.zeros(1, dtype=np.int64))
    assert decode_frames(FrameBatch.empty()).shape == (0,)


def test_frame_past_end_of_buffer_is_cut_not_read():
    data = raw(eth() / inner_tcp())
    batch = make_batch([data])
    batch = FrameBatch(
        batch.data[:40],
        batch.offset,
        batch.cap_len,
        batch.wire_len,
        batch.ts_ns,
        batch.linktype,
        batch.interface,
    )
    row = decode_frames(batch)[0]
    assert row["cap_len"] == 40
    assert row["status"] == STATUS_TRUNCATED
    assert_addrs(row, *INNER4)


def test_decode_config_validation():
    with pytest.raises(ConfigError):
        DecodeConfig(vxlan_ports=(70000,))
    with pytest.raises(ConfigError):
        DecodeConfig(vxlan_ports=(4789,), geneve_ports=(4789,))
    assert DecodeConfig(vxlan_ports=[4789]).vxlan_ports == (4789,)  # type: ignore[arg-type]


# --- L2: VLAN, MPLS, PPPoE, LLC/SNAP ----------------------------------------------------------------
def test_single_vlan():
    row = decode_one(eth() / Dot1Q(vlan=100) / inner_tcp())
    assert_inner_tcp(row)
    assert row["vlan"] == 100
    assert (row["l3_offset"], row["l4_offset"]) == (18, 38)


def test_qinq_reports_outer_tag():
    row = decode_one(eth() / Dot1AD(vlan=10) / Dot1Q(vlan=20) / inner_tcp())
    assert_inner_tcp(row)
    assert row["vlan"] == 10
    assert row["l3_offset"] == 22


def test_three_tags_with_0x9100():
    pkt = eth(type=0x9100) / Dot1Q(vlan=7, type=0x88A8) / Dot1Q(vlan=8, type=0x8100) / Dot1Q(vlan=9)
    row = decode_one(pkt / inner_tcp(6))
    assert_inner_tcp(row, 6)
    assert row["vlan"] == 7
    assert row["l3_offset"] == 26


def test_mpls_two_labels_ipv4_and_ipv6():
    row = decode_one(eth() / MPLS(label=100, s=0) / MPLS(label=200, s=1) / inner_tcp())
    assert_inner_tcp(row)
    assert row["l3_offset"] == 22
    row6 = decode_one(eth(type=0x8848) / MPLS(label=3, s=1) / inner_tcp(6))
    assert_inner_tcp(row6, 6)


def test_mpls_pseudowire_with_control_word():
    inner = eth("02:00:00:00:00:0a", "02:00:00:00:00:0b") / Dot1Q(vlan=33) / inner_tcp()
    row = decode_one(eth() / MPLS(label=16, s=1) / (b"\x00\x00\x00\x00" + raw(inner)))
    assert_inner_tcp(row)
    assert row["src_mac"] == 0x02000000000A and row["vlan"] == 33


def test_pppoe_session():
    row = decode_one(eth() / PPPoE(sessionid=5) / PPP(proto=0x0021) / inner_tcp())
    assert_inner_tcp(row)
    row6 = decode_one(eth() / PPPoE(sessionid=5) / PPP(proto=0x0057) / inner_tcp(6))
    assert_inner_tcp(row6, 6)


def test_llc_snap_and_non_ip():
    row = decode_one(Dot3(dst="02:00:00:00:00:02") / LLC() / SNAP(code=0x0800) / inner_tcp())
    assert_inner_tcp(row)
    assert decode_one(eth() / ARP())["status"] == STATUS_NOT_IP
    assert decode_one(Dot3(dst="01:80:c2:00:00:00") / LLC() / (b"\x00" * 30))["status"] == STATUS_NOT_IP


# --- link types -------------------------------------------------------------------------------------
def test_linux_sll_and_sll2():
    sll = (
        CookedLinux(
            pkttype=0, lladdrtype=1, lladdrlen=6, src=bytes.fromhex("0200000000aa") + b"\0\0", proto=0x0800
        )
        / inner_tcp()
    )
    row = decode_one(sll, linktype=113)
    assert_inner_tcp(row)
    assert row["src_mac"] == 0x0200000000AA and row["l3_offset"] == 16
    sll2 = CookedLinuxV2(
        proto=0x86DD, lladdrtype=1, lladdrlen=6, src=bytes.fromhex("0200000000bb") + b"\0\0"
    ) / inner_tcp(6)
    row2 = decode_one(sll2, linktype=276)
    assert_inner_tcp(row2, 6)
    assert row2["src_mac"] == 0x0200000000BB and row2["l3_offset"] == 20
    vlan_sll = CookedLinux(proto=0x8100) / Dot1Q(vlan=12) / inner_tcp()
    row3 = decode_one(vlan_sll, linktype=113)
    assert_inner_tcp(row3)
    assert row3["vlan"] == 12


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_linktypes(linktype):
    assert_inner_tcp(decode_one(inner_tcp(), linktype=linktype))
    assert_inner_tcp(decode_one(inner_tcp(6), linktype=linktype), 6)
    assert decode_one(b"\x55" * 40, linktype=linktype)["status"] == STATUS_MALFORMED


def test_raw_ipv4_and_ipv6_linktypes():
    assert_inner_tcp(decode_one(inner_tcp(), linktype=228))
    assert_inner_tcp(decode_one(inner_tcp(6), linktype=229), 6)
    assert decode_one(inner_tcp(6), linktype=228)["status"] == STATUS_MALFORMED


@pytest.mark.parametrize(
    ("header", "ver"),
    [
        (struct.pack("<I", 2), 4),
        (struct.pack(">I", 2), 4),
        (struct.pack("<I", 24), 6),
        (struct.pack("<I", 28), 6),
        (struct.pack(">I", 30), 6),
    ],
)
@pytest.mark.parametrize("linktype", [0, 108])
def test_null_and_loop(header, ver, linktype):
    row = decode_one(header + raw(inner_tcp(ver)), linktype=linktype)
    assert_inner_tcp(row, ver)
    assert row["l3_offset"] == 4


def test_null_unknown_family_and_unknown_linktype():
    assert decode_one(struct.pack("<I", 7) + raw(inner_tcp()), linktype=0)["status"] == STATUS_NOT_IP
    row = decode_one(raw(eth() / inner_tcp()), linktype=147)
    assert row["status"] == STATUS_UNKNOWN_LINKTYPE
    assert row["ip_ver"] == 0


# --- IP ---------------------------------------------------------------------------------------------
def test_ipv4_options_are_skipped():
    pkt = eth() / IP(src=INNER4[0], dst=INNER4[1], options=[IPOption_RR(routers=["1.1.1.1", "2.2.2.2"])])
    row = decode_one(pkt / UDP(sport=5, dport=53) / (b"q" * 12))
    assert row["status"] == STATUS_OK
    ihl = len(raw(IP(options=[IPOption_RR(routers=["1.1.1.1", "2.2.2.2"])])))
    assert ihl > 20
    assert row["l4_offset"] == 14 + ihl
    assert (row["sport"], row["dport"], row["payload_len"]) == (5, 53, 12)
    assert row["ip_len"] == ihl + 8 + 12


def test_ipv4_authentication_header():
    ah = AH(nh=17, payloadlen=4, spi=1, icv=b"\0" * 12)
    pkt = eth() / IP(src=INNER4[0], dst=INNER4[1]) / ah / UDP(sport=9, dport=10)
    row = decode_one(pkt)
    assert (row["status"], row["proto"], row["sport"], row["dport"]) == (STATUS_OK, 17, 9, 10)
    assert row["l4_offset"] == 14 + 20 + 24


def test_ipv6_extension_headers_walked():
    pkt = (
        IPv6(src=INNER6[0], dst=INNER6[1])
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=["fd00::9"])
        / IPv6ExtHdrDestOpt()
        / TCP(sport=40000, dport=443, flags="PA")
        / (b"x" * 10)
    )
    row = decode_one(eth() / pkt)
    assert row["status"] == STATUS_OK
    assert (row["proto"], row["sport"], row["dport"]) == (6, 40000, 443)
    ext = 8 + 24 + 8
    assert row["l4_offset"] == 14 + 40 + ext
    assert row["ip_len"] == 40 + ext + 20 + 10
    assert row["payload_len"] == 10


def test_ipv6_esp_and_no_next_header_stop():
    esp = decode_one(eth() / IPv6(src=INNER6[0], dst=INNER6[1], nh=50) / (b"\1" * 24))
    assert (esp["status"], esp["proto"], esp["flags"] & FLAG_L4) == (STATUS_OK, 50, 0)
    assert esp["payload_len"] == 24
    nonext = decode_one(eth() / IPv6(src=INNER6[0], dst=INNER6[1]) / IPv6ExtHdrDestOpt(nh=59))
    assert (nonext["status"], nonext["proto"]) == (STATUS_OK, 59)


def test_ipv4_fragments():
    pkt = IP(src=INNER4[0], dst=INNER4[1], id=4242) / UDP(sport=1111, dport=2222) / (b"z" * 100)
    frags = [eth() / f for f in pkt.__class__(raw(pkt)).fragment(48)]
    rows = decode_frames(make_batch([raw(f) for f in frags]))
    first, later = rows[0], rows[1:]
    assert first["flags"] == FLAG_FRAGMENT | FLAG_MORE_FRAGMENTS | FLAG_L4
    assert (first["sport"], first["dport"], first["frag_id"], first["frag_offset"]) == (1111, 2222, 4242, 0)
    assert (later["flags"] & FLAG_LATER_FRAGMENT).all()
    assert not (later["flags"] & FLAG_L4).any()
    assert (later["sport"] == 0).all() and (later["proto"] == 17).all()
    assert (later["frag_id"] == 4242).all()
    assert list(later["frag_offset"]) == [6, 12]
    assert later[-1]["flags"] & FLAG_MORE_FRAGMENTS == 0
    assert (rows["status"] == STATUS_OK).all()
    assert int(rows["payload_len"][0]) + int(later["payload_len"].sum()) == 100


def test_ipv6_fragments():
    pkt = (
        IPv6(src=INNER6[0], dst=INNER6[1])
        / IPv6ExtHdrFragment(id=0xABCDEF01)
        / UDP(sport=7, dport=8)
        / (b"y" * 200)
    )
    frags = fragment6(pkt, 120)
    rows = decode_frames(make_batch([raw(eth() / f) for f in frags]))
    assert len(rows) >= 2
    assert (rows["frag_id"] == 0xABCDEF01).all()
    assert rows[0]["flags"] == FLAG_FRAGMENT | FLAG_MORE_FRAGMENTS | FLAG_L4
    assert (rows[0]["sport"], rows[0]["dport"]) == (7, 8)
    assert (rows[1:]["flags"] & FLAG_LATER_FRAGMENT).all()
    assert (rows[1:]["proto"] == 17).all() and (rows[1:]["sport"] == 0).all()
    assert (rows["frag_offset"][1:] > 0).all()


def test_tso_zero_total_length_uses_wire_length():
    data = bytearray(raw(eth() / inner_tcp()))
    data[16:18] = b"\x00\x00"
    row = decode_one(bytes(data), wire=9014)
    assert row["status"] == STATUS_OK
    assert row["ip_len"] == 9000
    assert row["payload_len"] == 9000 - 40


def test_snaplen_cut_keeps_header_lengths():
    full = raw(eth() / inner_tcp() / (b"p" * 1000))
    row = decode_one(full[:60], wire=len(full))
    assert row["status"] == STATUS_OK
    assert row["ip_len"] == 1050 and row["payload_len"] == 1010
    assert (row["wire_len"], row["cap_len"]) == (len(full), 60)


# --- L4 ----------------------------------------------------------------------------------------------
def test_icmp_echo_keys_both_directions_together():
    req = decode_one(eth() / IP(src=INNER4[0], dst=INNER4[1]) / ICMP(type=8, id=0x1234, seq=1))
    rep = decode_one(eth() / IP(src=INNER4[1], dst=INNER4[0]) / ICMP(type=0, id=0x1234, seq=1))
    for row, t in ((req, 8), (rep, 0)):
        assert (row["proto"], row["sport"], row["dport"], row["icmp_type"]) == (1, 0x1234, 0x1234, t)
        assert row["flags"] & FLAG_L4


def test_icmp_error_uses_type_code():
    row = decode_one(eth() / IP(src=INNER4[0], dst=INNER4[1]) / ICMP(type=3, code=3) / inner_tcp())
    assert (row["sport"], row["dport"], row["icmp_type"]) == (0, 3 << 8 | 3, 3)
    assert_addrs(row, *INNER4)  # the quoted packet is not decoded


def test_icmpv6_echo():
    for cls, t in ((ICMPv6EchoRequest, 128), (ICMPv6EchoReply, 129)):
        row = decode_one(eth() / IPv6(src=INNER6[0], dst=INNER6[1]) / cls(id=99))
        assert (row["proto"], row["sport"], row["dport"], row["icmp_type"]) == (58, 99, 99, t)


def test_sctp_ports():
    row = decode_one(eth() / IP(src=INNER4[0], dst=INNER4[1]) / SCTP(sport=3868, dport=2905))
    assert (row["status"], row["proto"], row["sport"], row["dport"]) == (STATUS_OK, 132, 3868, 2905)
    assert row["flags"] & FLAG_L4


def test_unknown_protocol_is_ok_without_l4():
    row = decode_one(eth() / IP(src=INNER4[0], dst=INNER4[1], proto=89) / (b"o" * 40))
    assert (row["status"], row["proto"], row["flags"], row["payload_len"]) == (STATUS_OK, 89, 0, 40)


# --- truncated and malformed ---------------------------------------------------------------------------
def test_truncated_inside_tcp_keeps_ip_and_ports():
    full = raw(eth() / inner_tcp())
    row = decode_one(full[:40], wire=len(full))
    assert row["status"] == STATUS_TRUNCATED
    assert row["ip_ver"] == 4
    assert_addrs(row, *INNER4)
    assert (row["sport"], row["dport"], row["ip_len"]) == (40000, 443, 50)
    assert not row["flags"] & FLAG_L4
    cut = decode_one(full[:35])
    assert cut["status"] == STATUS_TRUNCATED and cut["sport"] == 0 and cut["ip_ver"] == 4


def test_truncated_before_ip_addresses():
    full = raw(eth() / inner_tcp())
    for cut in (0, 5, 13, 20, 33):
        row = decode_one(full[:cut])
        assert row["status"] == STATUS_TRUNCATED
        assert row["ip_ver"] == 0
        assert row["l3_offset"] == 0 and row["l4_offset"] == 0


@pytest.mark.parametrize(
    ("offset", "patch"),
    [
        (14, b"\x44"),  # IHL 4
        (14, b"\x65"),  # version 6 behind an IPv4 ethertype
        (16, b"\x00\x0c"),  # total length 12 < IHL*4
    ],
)
def test_malformed_ipv4(offset, patch):
    data = bytearray(raw(eth() / inner_tcp()))
    data[offset : offset + len(patch)] = patch
    assert decode_one(bytes(data))["status"] == STATUS_MALFORMED


def test_malformed_tcp_data_offset():
    data = bytearray(raw(eth() / inner_tcp()))
    data[46] = 0x30  # data offset 3 words
    row = decode_one(bytes(data))
    assert row["status"] == STATUS_MALFORMED
    assert not row["flags"] & FLAG_L4


# --- tunnels -------------------------------------------------------------------------------------------
def vxlan(vni: int, inner, port: int = 4789, outer=OUTER4):
    ip = IP(src=outer[0], dst=outer[1]) if ":" not in outer[0] else IPv6(src=outer[0], dst=outer[1])
    return ip / UDP(sport=50000, dport=port) / VXLAN(vni=vni, flags=0x08) / inner


def test_vxlan():
    inner = eth("02:00:00:00:00:0a", "02:00:00:00:00:0b") / Dot1Q(vlan=30) / inner_tcp()
    frame = raw(eth() / Dot1Q(vlan=5) / vxlan(5001, inner))
    row = decode_one(frame)
    assert_inner_tcp(row)
    assert_tunnel(row, TUNNEL_VXLAN, 5001, OUTER4)
    assert row["src_mac"] == 0x02000000000A and row["vlan"] == 30
    assert row["wire_len"] == len(frame)
    assert row["l3_offset"] == 14 + 4 + 20 + 8 + 8 + 18


def test_vxlan_port_8472_and_ipv6_outer():
    row = decode_one(eth() / vxlan(7, eth() / inner_tcp(6), port=8472, outer=OUTER6))
    assert_inner_tcp(row, 6)
    assert_tunnel(row, TUNNEL_VXLAN, 7, OUTER6)
    plain = decode_one(
        eth() / vxlan(7, eth() / inner_tcp(6), port=8472), config=DecodeConfig(vxlan_ports=(4789,))
    )
    assert plain["tunnel_depth"] == 0 and plain["dport"] == 8472


def test_vxlan_not_decapsulated_when_disabled_or_invalid():
    frame = eth() / vxlan(9, eth() / inner_tcp())
    outer = decode_one(frame, config=DecodeConfig(decapsulate=False))
    assert_addrs(outer, *OUTER4)
    assert (outer["proto"], outer["dport"], outer["tunnel_depth"], outer["flags"]) == (17, 4789, 0, FLAG_L4)
    no_i_flag = raw(frame)
    no_i_flag = no_i_flag[:42] + b"\x00" + no_i_flag[43:]
    row = decode_one(no_i_flag)
    assert row["tunnel_depth"] == 0 and row["dport"] == 4789


def test_vxlan_inner_cut_before_ip_falls_back_to_outer():
    frame = raw(eth() / vxlan(9, eth() / inner_tcp()))
    row = decode_one(frame[: 14 + 20 + 8 + 8 + 10], wire=len(frame))
    assert row["status"] == STATUS_OK
    assert row["tunnel_depth"] == 0
    assert_addrs(row, *OUTER4)
    assert row["dport"] == 4789


def test_vxlan_carrying_arp_is_not_ip():
    row = decode_one(eth() / vxlan(9, eth() / ARP()))
    assert row["status"] == STATUS_NOT_IP
    assert_tunnel(row, TUNNEL_VXLAN, 9, OUTER4)


def test_fragmented_outer_is_not_decapsulated():
    pkt = (
        IP(src=OUTER4[0], dst=OUTER4[1], flags="MF", id=5)
        / UDP(sport=1, dport=4789)
        / VXLAN(vni=3)
        / (eth() / inner_tcp())
    )
    row = decode_one(eth() / pkt)
    assert row["tunnel_depth"] == 0
    assert row["flags"] & FLAG_FRAGMENT and row["dport"] == 4789


def test_geneve_with_options():
    opts = [GeneveOptions(classid=0x0102, type=0x80, data=b"\x01\x02\x03\x04\x05\x06\x07\x08")]
    pkt = (
        IP(src=OUTER4[0], dst=OUTER4[1])
        / UDP(sport=1, dport=6081)
        / GENEVE(vni=0xABCDE, proto=0x6558, options=opts)
        / eth()
        / inner_tcp()
    )
    row = decode_one(eth() / pkt)
    assert_inner_tcp(row)
    assert_tunnel(row, TUNNEL_GENEVE, 0xABCDE, OUTER4)
    assert row["l3_offset"] == 14 + 20 + 8 + 8 + 12 + 14


def test_geneve_ip_payload():
    pkt = IP(src=OUTER4[0], dst=OUTER4[1]) / UDP(sport=1, dport=6081) / GENEVE(vni=5, proto=0x86DD)
    row = decode_one(eth() / pkt / inner_tcp(6))
    assert_inner_tcp(row, 6)
    assert_tunnel(row, TUNNEL_GENEVE, 5, OUTER4)


def test_gre_key_and_sequence():
    pkt = (
        IP(src=OUTER4[0], dst=OUTER4[1])
        / GRE(key_present=1, key=0x11223344, seqnum_present=1, sequence_number=9, proto=0x0800)
        / inner_tcp()
    )
    row = decode_one(eth() / pkt)
    assert_inner_tcp(row)
    assert_tunnel(row, TUNNEL_GRE, 0x11223344, OUTER4)
    assert row["l3_offset"] == 14 + 20 + 12


def test_gre_checksum_ipv6_over_ipv6():
    pkt = IPv6(src=OUTER6[0], dst=OUTER6[1]) / GRE(chksum_present=1, proto=0x86DD) / inner_tcp(6)
    row = decode_one(eth() / pkt)
    assert_inner_tcp(row, 6)
    assert_tunnel(row, TUNNEL_GRE, 0, OUTER6)


def test_gre_transparent_ethernet_bridging():
    inner = eth("02:00:00:00:00:0c", "02:00:00:00:00:0d") / inner_tcp()
    pkt = IP(src=OUTER4[0], dst=OUTER4[1]) / GRE(key_present=1, key=77, proto=0x6558) / inner
    row = decode_one(eth() / pkt)
    assert_inner_tcp(row)
    assert_tunnel(row, TUNNEL_GRE, 77, OUTER4)
    assert row["src_mac"] == 0x02000000000C


def test_gre_pptp_ppp():
    pkt = IP(src=OUTER4[0], dst=OUTER4[1]) / GRE_PPTP(call_id=321, seqnum_present=1) / PPP(proto=0x21)
    row = decode_one(eth() / pkt / inner_tcp())
    assert_inner_tcp(row)
    assert_tunnel(row, TUNNEL_GRE, 321, OUTER4)


def test_gre_unknown_payload_stays_outer():
    row = decode_one(eth() / IP(src=OUTER4[0], dst=OUTER4[1]) / GRE(proto=0x1234) / (b"\0" * 20))
    assert (row["status"], row["proto"], row["tunnel_depth"]) == (STATUS_OK, 47, 0)
    assert_addrs(row, *OUTER4)


def test_erspan_type_1():
    inner = eth() / Dot1Q(vlan=44) / inner_tcp()
    row = decode_one(eth() / IP(src=OUTER4[0], dst=OUTER4[1]) / GRE(proto=0x88BE) / inner)
    assert_inner_tcp(row)
    assert_tunnel(row, TUNNEL_ERSPAN1, 0, OUTER4)
    assert row["vlan"] == 44


def test_erspan_type_2():
    gre = GRE(proto=0x88BE, seqnum_present=1, sequence_number=3)
    pkt = IP(src=OUTER4[0], dst=OUTER4[1]) / gre / ERSPAN_II(session_id=0x2AB, vlan=5) / eth() / inner_tcp()
    row = decode_one(eth() / pkt)
    assert_inner_tcp(row)
    assert_tunnel(row, TUNNEL_ERSPAN2, 0x2AB, OUTER4)
    assert row["l3_offset"] == 14 + 20 + 8 + 8 + 14


def test_erspan_type_3_with_and_without_platform_subheader():
    base = IP(src=OUTER4[0], dst=OUTER4[1]) / GRE(proto=0x22EB, seqnum_present=1)
    plain = decode_one(eth() / base / ERSPAN_III(session_id=0x155, o=0) / eth() / inner_tcp())
    assert_inner_tcp(plain)
    assert_tunnel(plain, TUNNEL_ERSPAN3, 0x155, OUTER4)
    platform = ERSPAN_PlatformSpecific(platf_id=3)
    pkt = base / ERSPAN_III(session_id=0x3FF, o=1) / platform / eth() / inner_tcp(6)
    row = decode_one(eth() / pkt)
    assert_inner_tcp(row, 6)
    assert_tunnel(row, TUNNEL_ERSPAN3, 0x3FF, OUTER4)
    assert row["l3_offset"] == plain["l3_offset"] + 8


@pytest.mark.parametrize(("outer_ver", "inner_ver"), [(4, 4), (4, 6), (6, 4), (6, 6)])
def test_ip_in_ip(outer_ver, inner_ver):
    nh = 4 if inner_ver == 4 else 41
    outer = (
        IP(src=OUTER4[0], dst=OUTER4[1], proto=nh)
        if outer_ver == 4
        else IPv6(src=OUTER6[0], dst=OUTER6[1], nh=nh)
    )
    row = decode_one(eth() / outer / inner_tcp(inner_ver))
    assert_inner_tcp(row, inner_ver)
    assert_tunnel(row, TUNNEL_IPIP, 0, OUTER4 if outer_ver == 4 else OUTER6)


def test_vxlan_inside_gre_nested():
    middle = IP(src="172.16.0.1", dst="172.16.0.2") / UDP(sport=3, dport=4789) / VXLAN(vni=99) / eth()
    pkt = IP(src=OUTER4[0], dst=OUTER4[1]) / GRE(key_present=1, key=5, proto=0x0800) / middle / inner_tcp()
    row = decode_one(eth() / pkt)
    assert_inner_tcp(row)
    assert_tunnel(row, TUNNEL_VXLAN, 99, ("172.16.0.1", "172.16.0.2"), depth=2)


def test_tunnel_depth_is_bounded():
    pkt = inner_tcp()
    for k in range(12):
        pkt = IP(src=f"10.9.{k}.1", dst=f"10.9.{k}.2", proto=4) / pkt
    row = decode_one(eth() / pkt)
    assert row["status"] == STATUS_OK
    assert row["tunnel_depth"] == 8
    assert row["proto"] == 4  # the 9th header from the outside, itself a tunnel left closed
    assert_addrs(row, "10.9.3.1", "10.9.3.2")


# --- real captures against tshark ------------------------------------------------------------------------
#: Captures with tunnels, VLAN/QinQ, MPLS, ERSPAN, PPPoE and non-Ethernet link types.
ORACLE_FILES: list[str] = [
    "tcpdump/tests/vxlan.pcap",
    "tcpdump/tests/vxlan_port_8472.pcap",
    "tcpdump/tests/gso-ipv4-vxlan-ipv4.pcap",
    "suricata-verify/tests/vxlan-decoder-03/vxlan.pcap",
    "suricata-verify/tests/vxlan-non-zero-reserved-fields/input.pcap",
    "zeek/testing/btest/Traces/tunnels/vxlan-triple-v2.pcap",
    "deepflow/agent/resources/test/common/ff-vxlan.pcap",
    "tcpdump/tests/geneve.pcap",
    "tcpdump/tests/geneve-gcp.pcap",
    "zeek/testing/btest/Traces/tunnels/geneve-vxlan-dns-truncated.pcap",
    "zeek/testing/btest/Traces/tunnels/geneve-tagged-udp-packet.pcap",
    "suricata-verify/tests/geneve-decoder/input.pcap",
    "zeek/testing/btest/Traces/tunnels/gre-sample.pcap",
    "zeek/testing/btest/Traces/tunnels/gre-pptp.pcap",
    "deepflow/agent/resources/test/common/vmware-gre-teb.pcap",
    "deepflow/server/libs/datatype/tencent-gre.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/GrePackets.cap",
    "suricata-verify/tests/bug-5633-gre-01/gre-udp.pcap",
    "tcpdump/tests/wccp_redirect_gre.pcap",
    "tcpdump/tests/various_gre.pcap",
    "tcpdump/tests/erspan-type-i-1.pcap",
    "tcpdump/tests/erspan-type-ii-2.pcap",
    "tcpdump/tests/erspan-type-iii-ft-0.pcap",
    "tcpdump/tests/erspan-type-iii-pb-1.pcap",
    "zeek/testing/btest/Traces/tunnels/gre-erspan3-dot1q.pcap",
    "deepflow/agent/resources/test/common/decapsulate_erspan1.pcap",
    "deepflow/agent/resources/test/common/decapsulate_test.pcap",
    "arkime/tests/pcap/gre-erspan.pcap",
    "suricata-verify/tests/decode-erspan-typeI-02/input.pcap",
    "zeek/testing/btest/Traces/tunnels/4in6.pcap",
    "zeek/testing/btest/Traces/tunnels/ping6-in-ipv4.pcap",
    "PcapPlusPlus/Tests/Packet++Test/PacketExamples/IPv4-encapsulated-IPv6.pcap",
    "zeek/testing/btest/Traces/mpls-in-vlan.pcap",
    "arkime/tests/pcap/mpls-basic.pcap",
    "PcapPlusPlus/Tests/Packet++Test/PacketExamples/MplsPackets.pcap",
    "zeek/testing/btest/Traces/http-qinq-0.pcap",
    "zeek/testing/btest/Traces/q-in-q.pcap",
    "zeek/testing/btest/Traces/vlan-pcp-dei.pcapng",
    "zeek/testing/btest/Traces/pbb.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/VlanPackets.pcap",
    "PcapPlusPlus/Tests/Packet++Test/PacketExamples/QinQ_802.1_AD.pcapng",
    "suricata-verify/tests/bug-4810/pppoe-session-http.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/sll2.pcap",
    "tcpdump/tests/resp_1_benchmark.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/null_loopback.pcap",
    "tcpdump/tests/quic_handshake.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/raw_ip.pcap",
    "suricata-verify/tests/linktype-228/flow-test-01.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/pcapng-example.pcapng",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/ip6_fragments.pcap",
    "suricata-verify/tests/decode-too-small/test.pcap",
    "arkime/tests/pcap/arkime_synthetic.pcap",
    "tcpdump/tests/nflog.pcap",
]
#: We decode UDP 8472 as VXLAN by default (Linux); tshark needs telling.
TSHARK_EXTRA = ("-d", "udp.port==8472,vxlan")
#: tshark layers we deliberately do not decode (AYIYA, NSH/VXLAN-GPE, Cisco metadata, 802.11, Arista).
#: GTP-U, Teredo, NFLOG and the UDP tunnels are compared in test_encapsulations.py.
UNSUPPORTED = {"ayiya", "nsh", "cmd", "wlan", "avsp", "vxlan-gpe"}
#: Frames where we differ from tshark on purpose.
KNOWN_DIFFERENCES = {
    # synthetic Geneve "reply" from UDP source port 6081 to 12345: tunnels are recognised by the
    # destination port only (RFC 8926 / 7348), tshark also tries the source port.
    ("arkime/tests/pcap/arkime_synthetic.pcap", 623),
}
TSHARK_FIELDS = (
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "sctp.srcport",
    "sctp.dstport",
    "vxlan.vni",
    "geneve.vni",
    "gre.key",
    "erspan.spanid",
)


def read_capture(path: Path) -> FrameBatch:
    """All frames of a pcap/pcapng file (scapy raw readers)."""
    frames: list[bytes] = []
    wires: list[int] = []
    lts: list[int] = []
    with open(path, "rb") as fh:
        pcapng = fh.read(4) == b"\x0a\x0d\x0d\x0a"
    reader = RawPcapNgReader(str(path)) if pcapng else RawPcapReader(str(path))
    with reader:
        for data, meta in reader:
            frames.append(data)
            wires.append(meta.wirelen if meta.wirelen is not None else len(data))
            lts.append(meta.linktype if pcapng else reader.linktype)
    return make_batch(frames, lts, wires)


def run_tshark(path: Path) -> list[dict[str, str]]:
    cmd = [
        "tshark",
        "-r",
        str(path),
        "-n",
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        *TSHARK_EXTRA,
        "-T",
        "fields",
        "-E",
        "occurrence=l",
        "-E",
        "separator=\t",
    ]
    for field in TSHARK_FIELDS:
        cmd += ["-e", field]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    return [dict(zip(TSHARK_FIELDS, line.split("\t"), strict=False)) for line in out.splitlines()]


def innermost(fields: dict[str, str]) -> dict | None:
    """tshark's innermost IP packet (None when there is none we are expected to match)."""
    toks = fields["frame.protocols"].split(":")
    ips = [i for i, t in enumerate(toks) if t in ("ip", "ipv6")]
    if not ips or UNSUPPORTED & set(toks):
        return None
    last = ips[-1]
    if {"icmp", "icmpv6"} & set(toks[:last]):
        return None  # ICMP error quoting a packet: we key on the ICMP packet
    if any(a == "udp" and b in ("ip", "ipv6") for a, b in zip(toks, toks[1:], strict=False)):
        return None  # IP straight in UDP (tshark heuristics, e.g. VXLAN-GPE on 4790): not decoded
    pre = "ip" if toks[last] == "ip" else "ipv6"
    if not fields[f"{pre}.src"]:
        return None  # tshark found the header bogus
    l4 = toks[last + 1] if last + 1 < len(toks) else ""
    ports = None
    if l4 in ("tcp", "udp", "sctp") and fields.get(f"{l4}.srcport"):
        ports = (int(fields[f"{l4}.srcport"]), int(fields[f"{l4}.dstport"]))
    return {"src": fields[f"{pre}.src"], "dst": fields[f"{pre}.dst"], "ports": ports, "protos": toks}


def compare_rows(rel: str, rows: np.ndarray, shark: list[dict[str, str]]) -> tuple[int, list[str]]:
    """Compare our rows with tshark's innermost fields for one capture."""
    checked, errors = 0, []
    for i, (row, fields) in enumerate(zip(rows, shark, strict=True)):
        want = innermost(fields)
        if want is None or (rel, i + 1) in KNOWN_DIFFERENCES:
            continue
        checked += 1
        if row["status"] == STATUS_NOT_IP and row["tunnel_depth"]:
            got = (
                to_text(row["tunnel_src_hi"], row["tunnel_src_lo"]),
                to_text(row["tunnel_dst_hi"], row["tunnel_dst_lo"]),
                want["ports"],
            )
        else:
            has_ports = row["proto"] in (6, 17, 132) and (
                row["flags"] & FLAG_L4 or (row["status"] == STATUS_TRUNCATED and row["sport"])
            )
            got = (
                (
                    to_text(row["src_hi"], row["src_lo"]),
                    to_text(row["dst_hi"], row["dst_lo"]),
                    (int(row["sport"]), int(row["dport"])) if has_ports else None,
                )
                if row["ip_ver"]
                else None
            )
        if got is not None and want["ports"] is None:
            got = got[:2] + (None,)  # tshark shows no ports (e.g. first fragment without reassembly)
        if got != (want["src"], want["dst"], want["ports"]):
            errors.append(f"{rel} #{i + 1} {':'.join(want['protos'])}: tshark {want} ours {got}")
        tid = {1: "vxlan.vni", 2: "geneve.vni", 3: "gre.key", 5: "erspan.spanid", 6: "erspan.spanid"}.get(
            int(row["tunnel_type"])
        )
        if tid and fields[tid] and int(fields[tid], 0) != row["tunnel_id"]:
            errors.append(f"{rel} #{i + 1}: {tid} {fields[tid]} != {row['tunnel_id']}")
    return checked, errors


@pytest.mark.oracle
def test_real_captures_match_tshark_innermost(tmp_path):
    if not PCAPS.is_dir():
        pytest.skip("shared pcaps not available")
    if shutil.which("tshark") is None or shutil.which("mergecap") is None:
        pytest.skip("tshark/mergecap not installed")
    files = [rel for rel in ORACLE_FILES if (PCAPS / rel).is_file()]
    if not files:
        pytest.skip("none of the oracle captures is present")
    batches = [read_capture(PCAPS / rel) for rel in files]
    merged = tmp_path / "oracle.pcapng"  # one tshark run instead of one per file
    subprocess.run(
        ["mergecap", "-a", "-F", "pcapng", "-w", str(merged), *(str(PCAPS / r) for r in files)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shark = run_tshark(merged)
    assert len(shark) == sum(len(b) for b in batches)
    checked, errors, start = 0, [], 0
    for rel, batch in zip(files, batches, strict=True):
        c, errs = compare_rows(rel, decode_frames(batch), shark[start : start + len(batch)])
        checked, start = checked + c, start + len(batch)
        errors += errs
    assert checked > 2000
    assert not errors, "\n".join(errors[:20])


@pytest.mark.oracle
def test_real_capture_statuses():
    """Spot checks on captures with a known shape."""
    cases = {
        "tcpdump/tests/vxlan.pcap": (TUNNEL_VXLAN, 8),  # 2 of 10 carry ARP
        "zeek/testing/btest/Traces/erspanIII.pcap": (TUNNEL_ERSPAN3, 2),
        "zeek/testing/btest/Traces/tunnels/gre-sample.pcap": (TUNNEL_GRE, 40),
    }
    if not all((PCAPS / rel).is_file() for rel in cases):
        pytest.skip("shared pcaps not available")
    for rel, (ttype, n_ok) in cases.items():
        rows = decode_frames(read_capture(PCAPS / rel))
        assert (rows["status"] == STATUS_OK).sum() == n_ok, rel
        assert (rows["tunnel_type"][rows["status"] == STATUS_OK] == ttype).all(), rel
