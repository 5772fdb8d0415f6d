"""cloudtap TCP flows vs Argus: per-key packet counts and handshake RTTs (synack, ackdat).

Goldens: ``tests/golden/argus/*.csv`` (argus + racluster, merged per unordered key). Argus's
``synack`` (SYN -> SYN-ACK) is cloudtap's ``rtt_server_us``; ``ackdat`` (SYN-ACK -> ACK) is
``rtt_client_us``. RTTs are compared within 1 us where the key holds exactly one connection in both
tools. Differences that are not cloudtap bugs are listed in ``EXCEPTIONS`` (see docs/oracles.md).
"""

from __future__ import annotations

import pytest
from oracle_flows import Mismatches, capture_of, golden_files, golden_key, known_rtts, read_golden

GOLDENS = golden_files("argus")
RTT_TOLERANCE_US = 1.0 + 1e-6

#: (capture, check[, key]) -> why cloudtap and Argus legitimately differ there (docs/oracles.md).
EXCEPTIONS: dict[tuple[str, ...], str] = {
    (
        "suricata-verify/tests/defrag/bug-6887-defrag-eth-vlan-ipv4-tcp-syn/frag-eth-vlan-ip-tcp-syn.pcap",
        "keys",
    ): "first fragment carries only 8 TCP bytes: Argus keys it with ports 0, cloudtap reads the ports",
    ("tcpdump/tests/timestamp_invalid_nano.pcap", "rtt"): (
        "nanosecond fields >= 10^9: Argus and cloudtap carry the overflow differently"
    ),
    (
        "zeek/doc/advanced/devel/plugins/connkey-vxlan-fivetuple-plugin-src/Traces/"
        "vxlan-overlapping-http-get.pcap",
        "packets",
    ): "the connection is replayed in 3 VXLAN networks; Argus counts one copy (7 of 21 packets each way)",
}


def compare(rows: list[dict[str, str]], got: dict, mm: Mismatches) -> None:
    """Record every per-key difference between Argus rows and cloudtap totals."""
    for row in rows:
        key = golden_key(row)
        t = got.get(key)
        if t is None:
            mm.add("keys", f"argus only ({row['packets_ab']},{row['packets_ba']} packets)", key)
            continue
        want = (int(row["packets_ab"]), int(row["packets_ba"]))
        if want != tuple(t.packets):
            mm.add("packets", f"packets a>b,b>a argus {want} cloudtap {tuple(t.packets)}", key)
        for column, which in (("rtt_server_us", "server"), ("rtt_client_us", "client")):
            if not row[column]:
                continue
            argus_us = float(row[column])
            ours = known_rtts(t, which)
            if len(t.rtts) != 1:
                continue  # several connections on this key: which RTT argus kept is ambiguous
            if not ours:
                mm.add("rtt", f"{column} argus {argus_us:.0f} cloudtap unknown", key)
            elif abs(ours[0] - argus_us) > RTT_TOLERANCE_US:
                mm.add("rtt", f"{column} argus {argus_us:.0f} cloudtap {ours[0]:.3f}", key)


@pytest.mark.oracle
def test_exceptions_name_existing_goldens():
    names = {capture_of(g) for g in GOLDENS}
    assert GOLDENS, "no argus goldens: run scripts/regen_golden.py"
    assert not [e[0] for e in EXCEPTIONS if e[0] not in names]


@pytest.mark.oracle
@pytest.mark.parametrize("golden", GOLDENS, ids=lambda g: capture_of(g))
def test_tcp_flows_match_argus(golden, metered):
    capture = capture_of(golden)
    _, got = metered(capture)
    mm = Mismatches(capture, EXCEPTIONS)
    compare(read_golden(golden), got, mm)
    mm.assert_clean()
