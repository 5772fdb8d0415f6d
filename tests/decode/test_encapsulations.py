"""Encapsulations met in clouds and public captures, each checked frame by frame against tshark.

Generated captures (scapy or hand-built bytes) cover VN-Tag / 802.1BR, Arista timestamp headers,
GRE-in-UDP, MPLS-in-UDP, MPLS in GRE, GTP-U with extension headers, Teredo with its indicators,
6in4 / 4in6, PPTP, nested tunnels and the ERSPAN variants, and the NFLOG link type in both byte
orders; the shared public captures with those encapsulations are compared too. ``innermost_oracle`` holds the comparison.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from innermost_oracle import PCAPS, compare
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, GRE_PPTP, Dot1Q, Ether
from scapy.layers.ppp import PPP
from scapy.layers.vxlan import VXLAN
from scapy.packet import raw
from scapy.utils import wrpcap

from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.decode import DecodeConfig, decode_frames
from cloudtap.errors import ConfigError
from cloudtap.schema.address import from_text
from cloudtap.schema.packet import (
    FLAG_TUNNEL,
    STATUS_NOT_IP,
    STATUS_OK,
    TUNNEL_ERSPAN1,
    TUNNEL_ERSPAN2,
    TUNNEL_ERSPAN3,
    TUNNEL_GRE,
    TUNNEL_GRE_UDP,
    TUNNEL_GTPU,
    TUNNEL_IPIP,
    TUNNEL_MPLS_UDP,
    TUNNEL_NAMES,
    TUNNEL_NONE,
    TUNNEL_TEREDO,
    TUNNEL_VXLAN,
)

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

OUTER = ("192.0.2.1", "192.0.2.2")
INNER4 = ("10.0.0.1", "10.0.0.2")
INNER6 = ("2001:db8:1::1", "2001:db8:1::2")


def eth(**fields):
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **fields)


def outer():
    return eth() / IP(src=OUTER[0], dst=OUTER[1])


def inner(ver: int = 4, sport: int = 40000, dport: int = 443):
    ip = IP(src=INNER4[0], dst=INNER4[1]) if ver == 4 else IPv6(src=INNER6[0], dst=INNER6[1])
    return ip / TCP(sport=sport, dport=dport, flags="PA") / (b"x" * 10)


def teredo_auth(id_len: int = 0, au_len: int = 0) -> bytes:
    """Teredo authentication indicator: type 1, lengths, client id, value, nonce, confirmation."""
    return b"\x00\x01" + bytes([id_len, au_len]) + b"i" * id_len + b"a" * au_len + b"n" * 8 + b"\x00"


def teredo_origin(port: int = 40000, addr: str = "198.51.100.7") -> bytes:
    """Teredo origin indication: type 0, then the port and address, each bit-inverted."""
    a = int.from_bytes(bytes(int(x) for x in addr.split(".")), "big")
    return b"\x00\x00" + struct.pack(">HI", port ^ 0xFFFF, a ^ 0xFFFFFFFF)


#: name -> (frame, expected tunnel type, tunnel id, depth)
CASES = {
    "vntag": (raw(eth(type=0x8926) / b"\x80\x05\x00\x07" / b"\x08\x00" / inner()), TUNNEL_NONE, 0, 0),
    "vntag_vlan": (
        raw(eth(type=0x8926) / b"\x00\x05\x00\x07" / b"\x81\x00" / Dot1Q(vlan=12) / inner(6)),
        TUNNEL_NONE,
        0,
        0,
    ),
    "etag": (raw(eth(type=0x893F) / b"\x00\x00\x10\x01\x00\x00" / b"\x08\x00" / inner()), TUNNEL_NONE, 0, 0),
    "arista_ts64": (
        raw(eth(type=0xD28B) / b"\x00\x01\x00\x10" / (b"t" * 8) / b"\x81\x00" / Dot1Q(vlan=100) / inner()),
        TUNNEL_NONE,
        0,
        0,
    ),
    "arista_ts48": (
        raw(eth(type=0xD28B) / b"\x00\x01\x01\x20" / (b"t" * 6) / b"\x08\x00" / inner()),
        TUNNEL_NONE,
        0,
        0,
    ),
    "gre_udp_ip": (
        raw(outer() / UDP(sport=51000, dport=4754) / GRE(proto=0x0800, key_present=1, key=77) / inner()),
        TUNNEL_GRE_UDP,
        77,
        1,
    ),
    "gre_udp_teb": (
        raw(outer() / UDP(sport=51001, dport=4754) / GRE(proto=0x6558) / eth() / inner(6)),
        TUNNEL_GRE_UDP,
        0,
        1,
    ),
    "mpls_udp": (
        raw(outer() / UDP(sport=51002, dport=6635) / MPLS(label=1000, s=0) / MPLS(label=16, s=1) / inner()),
        TUNNEL_MPLS_UDP,
        1000,
        1,
    ),
    "mpls_in_gre": (
        raw(outer() / GRE(proto=0x8847) / MPLS(label=20, s=1) / inner(6)),
        TUNNEL_GRE,
        0,
        1,
    ),
    "gtpu": (
        raw(outer() / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=0x1234) / inner()),
        TUNNEL_GTPU,
        0x1234,
        1,
    ),
    "gtpu_seq": (
        raw(outer() / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=5, S=1, seq=9) / inner(6)),
        TUNNEL_GTPU,
        5,
        1,
    ),
    "gtpu_ext": (
        raw(
            outer()
            / UDP(sport=2152, dport=2152)
            / GTP_U_Header(teid=6, E=1, next_ex=0x85)
            / GTPPDUSessionContainer(type=1, QFI=9)
            / inner()
        ),
        TUNNEL_GTPU,
        6,
        1,
    ),  # fmt: skip
    "teredo": (
        raw(outer() / UDP(sport=3544, dport=40000) / inner(6)),
        TUNNEL_TEREDO,
        0,
        1,
    ),
    "teredo_origin": (
        raw(outer() / UDP(sport=3544, dport=40001) / teredo_origin() / inner(6)),
        TUNNEL_TEREDO,
        0,
        1,
    ),
    "teredo_auth_origin": (
        raw(outer() / UDP(sport=40002, dport=3544) / teredo_auth(2, 3) / teredo_origin() / inner(6)),
        TUNNEL_TEREDO,
        0,
        1,
    ),
    "6in4": (raw(eth() / IP(src=OUTER[0], dst=OUTER[1], proto=41) / inner(6)), TUNNEL_IPIP, 0, 1),
    "4in6": (raw(eth() / IPv6(src="2001:db8::a", dst="2001:db8::b", nh=4) / inner()), TUNNEL_IPIP, 0, 1),
    "pptp": (
        raw(outer() / GRE_PPTP(call_id=31, seqnum_present=1, sequence_number=4) / PPP(proto=0x21) / inner()),
        TUNNEL_GRE,
        31,
        1,
    ),
    "pptp_ack": (
        raw(
            outer()
            / GRE_PPTP(call_id=32, seqnum_present=1, acknum_present=1, sequence_number=5, ack_number=4)
            / PPP(proto=0x21)
            / inner()
        ),
        TUNNEL_GRE,
        32,
        1,
    ),  # fmt: skip
    "erspan1": (raw(outer() / GRE(proto=0x88BE) / eth() / inner()), TUNNEL_ERSPAN1, 0, 1),
    "erspan2": (
        raw(outer() / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II(session_id=7) / eth() / inner()),
        TUNNEL_ERSPAN2,
        7,
        1,
    ),
    "erspan3": (
        raw(outer() / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(session_id=8) / eth() / inner()),
        TUNNEL_ERSPAN3,
        8,
        1,
    ),
    "erspan3_platform": (
        raw(
            outer()
            / GRE(proto=0x22EB, seqnum_present=1)
            / ERSPAN_III(session_id=9, o=1)
            / ERSPAN_PlatformSpecific()
            / eth()
            / inner(6)
        ),
        TUNNEL_ERSPAN3,
        9,
        1,
    ),  # fmt: skip
    "erspan_vxlan": (
        raw(
            outer()
            / GRE(proto=0x88BE, seqnum_present=1)
            / ERSPAN_II(session_id=3)
            / eth()
            / IP(src="172.16.0.1", dst="172.16.0.2")
            / UDP(sport=50000, dport=4789)
            / VXLAN(vni=42)
            / eth()
            / inner()
        ),
        TUNNEL_VXLAN,
        42,
        2,
    ),  # fmt: skip
    "gtpu_in_vxlan": (
        raw(
            outer()
            / UDP(sport=50001, dport=4789)
            / VXLAN(vni=43)
            / eth()
            / IP(src="172.16.0.3", dst="172.16.0.4")
            / UDP(sport=2152, dport=2152)
            / GTP_U_Header(teid=44)
            / inner()
        ),
        TUNNEL_GTPU,
        44,
        2,
    ),  # fmt: skip
}

#: Frames that look like a tunnel port but carry no packet: keyed on the outer UDP.
NOT_ENTERED = {
    "gtpu_echo": raw(
        outer() / UDP(sport=2152, dport=2152) / GTP_U_Header(gtp_type=1, teid=0) / (b"\x00" * 4)
    ),
    "teredo_bubble_origin_only": raw(outer() / UDP(sport=3544, dport=40003) / teredo_origin()),
    "teredo_not_ipv6": raw(outer() / UDP(sport=3544, dport=40004) / b"\x45hello"),
    "ephemeral_3544_not_teredo": raw(outer() / UDP(sport=3544, dport=53) / (b"\x60\x01" + b"\x00" * 50)),
}


def batch_of(frames: list[bytes], linktype: int = 1) -> FrameBatch:
    lens = np.array([len(f) for f in frames], np.uint32)
    offset = np.zeros(len(frames), np.int64)
    offset[1:] = np.cumsum(lens, dtype=np.int64)[:-1]
    return FrameBatch(
        data=np.frombuffer(b"".join(frames), np.uint8), offset=offset, cap_len=lens, wire_len=lens.copy(),
        ts_ns=np.zeros(len(frames), np.int64), linktype=np.full(len(frames), linktype, np.uint16),
        interface=np.zeros(len(frames), np.uint16),
    )  # fmt: skip


def addr(row, prefix: str = "") -> tuple[tuple[int, int], tuple[int, int]]:
    return (
        (int(row[prefix + "src_hi"]), int(row[prefix + "src_lo"])),
        (int(row[prefix + "dst_hi"]), int(row[prefix + "dst_lo"])),
    )


def nflog_frame(packet: bytes, family: int = 2, big_endian: bool = False) -> bytes:
    """NFLOG record: header, NFULA_PACKET_HDR, NFULA_PREFIX, NFULA_PAYLOAD (TLVs in the host order)."""
    e = ">" if big_endian else "<"

    def tlv(kind: int, value: bytes) -> bytes:
        body = struct.pack(e + "HH", 4 + len(value), kind) + value
        return body + b"\x00" * (-len(body) % 4)

    hw = 0x0800 if family == 2 else 0x86DD
    return (
        bytes([family, 0]) + struct.pack(">H", 7)
        + tlv(1, struct.pack(">HBB", hw, 3, 0)) + tlv(10, b"drop\x00") + tlv(9, packet)
    )  # fmt: skip


def write_pcap(path: Path, frames: list[bytes], linktype: int, big_endian: bool = False) -> Path:
    e = ">" if big_endian else "<"
    out = [struct.pack(e + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for i, f in enumerate(frames):
        out.append(struct.pack(e + "IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f)
    path.write_bytes(b"".join(out))
    return path


# --- the decoder's rows ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_innermost_packet_and_tunnel_fields(name):
    frame, ttype, tid, depth = CASES[name]
    row = decode_frames(batch_of([frame]))[0]
    assert row["status"] == STATUS_OK
    assert row["proto"] == 6 and (row["sport"], row["dport"]) == (40000, 443)
    want = INNER4 if row["ip_ver"] == 4 else INNER6
    assert addr(row) == (from_text(want[0]), from_text(want[1]))
    assert (row["tunnel_type"], row["tunnel_id"], row["tunnel_depth"]) == (ttype, tid, depth)
    assert bool(row["flags"] & FLAG_TUNNEL) == (depth > 0)
    assert row["payload_len"] == 10
    if name == "vntag_vlan":
        assert row["vlan"] == 12


def test_nested_tunnel_records_the_innermost_outer_addresses():
    row = decode_frames(batch_of([CASES["erspan_vxlan"][0]]))[0]
    assert addr(row, "tunnel_") == (from_text("172.16.0.1"), from_text("172.16.0.2"))
    row = decode_frames(batch_of([CASES["gtpu_in_vxlan"][0]]))[0]
    assert addr(row, "tunnel_") == (from_text("172.16.0.3"), from_text("172.16.0.4"))


@pytest.mark.parametrize("name", sorted(NOT_ENTERED))
def test_tunnel_ports_without_a_packet_key_on_the_outer_udp(name):
    row = decode_frames(batch_of([NOT_ENTERED[name]]))[0]
    assert row["status"] == STATUS_OK and row["tunnel_depth"] == 0 and row["proto"] == 17
    assert addr(row) == (from_text(OUTER[0]), from_text(OUTER[1]))


def test_cut_inner_packet_falls_back_to_the_tunnel_packet():
    frame = CASES["gtpu"][0]
    cut = len(frame) - len(raw(inner())) + 10  # 10 bytes of the inner IPv4 header
    row = decode_frames(batch_of([frame[:cut]]))[0]
    assert row["tunnel_depth"] == 0 and row["proto"] == 17 and (row["sport"], row["dport"]) == (2152, 2152)


def test_udp_tunnels_follow_the_config():
    frames = [CASES[n][0] for n in ("gtpu", "teredo", "gre_udp_ip", "mpls_udp")]
    rows = decode_frames(batch_of(frames), DecodeConfig(gtpu_ports=(), teredo_ports=(), gre_udp_ports=(),
                                                        mpls_udp_ports=()))  # fmt: skip
    assert list(rows["tunnel_depth"]) == [0, 0, 0, 0] and list(rows["proto"]) == [17] * 4
    assert decode_frames(batch_of(frames), DecodeConfig(decapsulate=False))["tunnel_depth"].sum() == 0
    moved = raw(outer() / UDP(sport=1, dport=9999) / GTP_U_Header(teid=3) / inner())
    assert decode_frames(batch_of([moved]), DecodeConfig(gtpu_ports=(9999,)))[0]["tunnel_type"] == TUNNEL_GTPU
    with pytest.raises(ConfigError, match="both GTP-U and Teredo"):
        DecodeConfig(gtpu_ports=(3544,))
    with pytest.raises(ConfigError, match="gre_udp_ports"):
        DecodeConfig(gre_udp_ports=(0,))


def test_tunnel_names_are_append_only():
    assert TUNNEL_NAMES[:8] == ("", "vxlan", "geneve", "gre", "erspan1", "erspan2", "erspan3", "ipip")
    assert TUNNEL_NAMES[TUNNEL_GTPU] == "gtpu" and TUNNEL_NAMES[TUNNEL_TEREDO] == "teredo"
    assert TUNNEL_NAMES[TUNNEL_GRE_UDP] == "gre_udp" and TUNNEL_NAMES[TUNNEL_MPLS_UDP] == "mpls_udp"


@pytest.mark.parametrize("big_endian", [False, True])
def test_nflog_link_type(big_endian):
    frames = [
        nflog_frame(raw(inner()), 2, big_endian),
        nflog_frame(raw(inner(6)), 10, big_endian),
        bytes([2, 0, 0, 0]) + struct.pack(">HH" if big_endian else "<HH", 8, 1) + b"\x08\x00\x03\x00",
    ]
    rows = decode_frames(batch_of(frames, linktype=239))
    assert list(rows["status"][:2]) == [STATUS_OK, STATUS_OK]
    assert list(rows["ip_ver"][:2]) == [4, 6]
    assert rows["status"][2] != STATUS_OK  # no payload TLV
    assert (rows["sport"][0], rows["dport"][0]) == (40000, 443)


# --- against tshark ----------------------------------------------------------------------------------
@pytest.mark.oracle
@needs_tshark
def test_generated_encapsulations_match_tshark(tmp_path):
    frames = [CASES[n][0] for n in sorted(CASES)] + [NOT_ENTERED[n] for n in sorted(NOT_ENTERED)]
    path = tmp_path / "encaps.pcap"
    wrpcap(str(path), [Ether(f) for f in frames])
    result = compare(path)
    assert result.frames == len(frames)
    assert not result.differ, result.differ


@pytest.mark.oracle
@needs_tshark
@pytest.mark.parametrize("big_endian", [False, True])
def test_generated_nflog_matches_tshark(tmp_path, big_endian):
    frames = [nflog_frame(raw(inner()), 2, big_endian), nflog_frame(raw(inner(6)), 10, big_endian)]
    path = write_pcap(tmp_path / "nflog.pcap", frames, 239, big_endian)
    result = compare(path)
    assert result.frames == 2 and not result.differ, result.differ


#: Public captures with these encapsulations; each must match tshark on every frame.
REAL = [
    "zeek/testing/btest/Traces/tunnels/gtp/gtp_ext_header.pcap",
    "zeek/testing/btest/Traces/tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap",
    "tcpdump/tests/nflog.pcap",
    "tcpdump/tests/arista_ether.pcap",
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/GrePackets.cap",
    "zeek/testing/btest/Traces/tunnels/gre-pptp.pcap",
    "deepflow/agent/resources/test/common/decapsulate_test.pcap",
    "tcpdump/tests/erspan-type-i-1.pcap",
    "tcpdump/tests/erspan-type-ii-2.pcap",
    "tcpdump/tests/erspan-type-iii-ft-0.pcap",
    "zeek/testing/btest/Traces/erspanII.pcap",
    "zeek/testing/btest/Traces/erspanIII.pcap",
    "zeek/testing/btest/Traces/tunnels/gre-erspan3-dot1q.pcap",
    "arkime/tests/pcap/gre-erspan.pcap",
    "suricata-verify/tests/decode-erspan-typeI-02/input.pcap",
    "zeek/testing/btest/Traces/tunnels/4in6.pcap",
    "zeek/testing/btest/Traces/tunnels/ping6-in-ipv4.pcap",
    "PcapPlusPlus/Tests/Packet++Test/PacketExamples/IPv4-encapsulated-IPv6.pcap",
    "PcapPlusPlus/Tests/Packet++Test/PacketExamples/MplsPackets.pcap",
]


@pytest.mark.oracle
@needs_tshark
@pytest.mark.parametrize("rel", REAL)
def test_real_captures_match_tshark(rel):
    path = PCAPS / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the shared captures")
    result = compare(path)
    assert result.frames > 0
    assert not result.differ, result.differ[:5]


def test_real_gtp_and_nflog_are_decapsulated():
    gtp = PCAPS / "zeek/testing/btest/Traces/tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap"
    nflog = PCAPS / "tcpdump/tests/nflog.pcap"
    if not (gtp.is_file() and nflog.is_file()):
        pytest.skip("shared captures not available")
    with CaptureFile(gtp) as cf:
        rows = np.concatenate([decode_frames(b) for b in cf.batches()])
    assert (rows["tunnel_type"] == TUNNEL_GTPU).any()
    with CaptureFile(nflog) as cf:
        rows = np.concatenate([decode_frames(b) for b in cf.batches()])
    assert (rows["status"] == STATUS_OK).all() and (rows["ip_ver"] == 4).all()
    assert not (rows["status"] == STATUS_NOT_IP).any()
