"""cloudtap flows vs tshark: per-key packets, IP bytes, frame bytes, times, SYNs, retransmissions.

Goldens: ``tests/golden/tshark/*.csv.gz`` from ``scripts/regen_golden.py``. Every difference that
is not a cloudtap bug is listed in ``EXCEPTIONS`` (capture, check) and explained in docs/oracles.md.
"""

from __future__ import annotations

import pytest
from oracle_flows import Mismatches, capture_of, golden_files, golden_key, read_golden

GOLDENS = golden_files("tshark")

_FABRICPATH = "zeek/testing/btest/Traces/cisco-fabric-path.pcap"
_MOBILITY = "zeek/testing/btest/Traces/ipv6-mobility-dst-opts.pcap"
_EXT_CHAIN = "libpcap/tests/filter/ipv6_ext_headers.pcap"
_R_FABRICPATH = "Cisco FabricPath (ethertype 0x8903) is not decoded: those copies are not metered"
_R_MOBILITY = "tshark aborts on a bad option inside a dest-options header; cloudtap skips it by length"
_R_EXT_CHAIN = "a chain of 40+ IPv6 extension headers: cloudtap stops at its limit (proto 43, no ports)"
_R_IDLE = "the connection is split by an idle timeout; the retransmission lands in a new flow"

#: (capture, check[, key]) -> why cloudtap and tshark legitimately differ there (docs/oracles.md).
EXCEPTIONS: dict[tuple[str, ...], str] = {
    **{(_FABRICPATH, c): _R_FABRICPATH for c in ("keys", "packets", "bytes", "l2_bytes", "time")},
    **{(_MOBILITY, c): _R_MOBILITY for c in ("keys", "packets", "bytes", "l2_bytes", "time")},
    (_EXT_CHAIN, "keys", "43 2001:db8::1:0 <> 2001:db8::2:0"): _R_EXT_CHAIN,
    (_EXT_CHAIN, "keys", "17 2001:db8::1:12345 <> 2001:db8::2:54321"): _R_EXT_CHAIN,
    ("arkime/tests/pcap/arkime_synthetic.pcap", "keys", "1 192.168.10.1:0 <> 192.168.10.2:0"): (
        "NSH (ethertype 0x894f) and Cisco MetaData (0x8909) frames are not decoded"
    ),
    ("zeek/testing/btest/Traces/llc.pcap", "keys"): "link type FDDI (10) is not decoded",
    ("tcpdump/tests/LINKTYPE_IPV4_invalid.pcap", "keys"): (
        "an IPv6 packet in a LINKTYPE_IPV4 file: cloudtap says malformed, tshark decodes it anyway"
    ),
    ("tcpdump/tests/bigtcp-ipv4-vxlan-ipv4.pcap", "keys"): (
        "BIG TCP frame (IPv4 and UDP length 0): tshark does not decode its VXLAN, cloudtap does"
    ),
    ("PcapPlusPlus/Tests/Pcap++Test/PcapExamples/pcapng-example.pcapng", "time"): (
        "timestamps past 2^63 ns: tshark reads them unsigned, cloudtap's int64 ns wraps"
    ),
    ("tcpdump/tests/timestamp_invalid_nano.pcap", "time"): (
        "nanosecond fields >= 10^9: tshark and cloudtap carry the overflow differently"
    ),
    ("zeek/testing/btest/Traces/vlan-pcp-dei.pcapng", "retrans"): (
        "one connection captured on 3 VLANs: tshark ignores VLAN and calls the copies retransmissions"
    ),
    (
        "zeek/doc/advanced/devel/plugins/connkey-vxlan-fivetuple-plugin-src/Traces/"
        "vxlan-overlapping-http-get.pcap",
        "retrans",
    ): "one connection in 3 VXLAN networks: tshark ignores the VNI and calls the copies retransmissions",
    ("zeek/testing/btest/Traces/tcp/retransmit-timeout.pcapng", "retrans"): _R_IDLE,
    ("PcapPlusPlus/Tests/Packet++Test/PacketExamples/dns_over_tcp.pcapng", "retrans"): _R_IDLE,
    ("zeek/testing/btest/Traces/tcp/reassembly.pcap", "retrans"): (
        "close_linger_s (2 s) ends the flow after the client's one-way FIN; the 3 retransmissions"
        " 3.2 s later start a new flow without sequence state"
    ),
}

#: golden column prefix -> check name; each compared a->b and b->a.
DIRECTIONAL = {
    "packets": "packets",
    "bytes": "bytes",
    "l2_bytes": "l2_bytes",
    "retrans": "retrans",
    "zero_window": "zero_window",
    "ooo": "ooo",
}


def compare(capture: str, rows: list[dict[str, str]], got: dict, mm: Mismatches) -> None:
    """Record every per-key difference between tshark rows and cloudtap totals."""
    expected = {golden_key(r): r for r in rows}
    for key in sorted(set(got) - set(expected), key=str):
        mm.add("keys", f"cloudtap only ({got[key].packets} packets a>b,b>a)", key)
    for key, row in expected.items():
        t = got.get(key)
        if t is None:
            mm.add("keys", f"tshark only ({row['packets_ab']},{row['packets_ba']} packets)", key)
            continue
        for column, check in DIRECTIONAL.items():
            want = (int(row[f"{column}_ab"]), int(row[f"{column}_ba"]))
            have = tuple(getattr(t, column))
            if want != have:
                mm.add(check, f"{column} a>b,b>a tshark {want} cloudtap {have}", key)
        want_t = (int(row["first_ns"]), int(row["last_ns"]))
        have_t = (t.first_ns, t.last_ns)
        if want_t != have_t:
            mm.add("time", f"first/last ns tshark {want_t} cloudtap {have_t}", key)
        want_s = (int(row["syn_count"]), int(row["synack_count"]))
        have_s = (t.syn_count, t.synack_count)
        if want_s != have_s:
            mm.add("syn", f"syn,synack tshark {want_s} cloudtap {have_s}", key)


@pytest.mark.oracle
def test_exceptions_name_existing_goldens():
    names = {capture_of(g) for g in GOLDENS}
    assert GOLDENS, "no tshark goldens: run scripts/regen_golden.py"
    assert not [e[0] for e in EXCEPTIONS if e[0] not in names]


@pytest.mark.oracle
@pytest.mark.parametrize("golden", GOLDENS, ids=lambda g: capture_of(g))
def test_flows_match_tshark(golden, metered):
    capture = capture_of(golden)
    _, got = metered(capture)
    mm = Mismatches(capture, EXCEPTIONS)
    compare(capture, read_golden(golden), got, mm)
    mm.assert_clean()
