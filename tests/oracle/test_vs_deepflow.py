"""cloudtap TCP health vs DeepFlow's flow_generator PerfData (``*.result`` of its tcp.rs tests).

DeepFlow's test feeds every packet of a pcap into one ``TcpPerf`` and prints the cumulative
PerfData after each packet; the golden (``tests/golden/deepflow/*.csv``) is the final snapshot.
Direction 0 is the sender of the pcap's first packet (``first_src``). Compared: SYN and SYN-ACK
counts, retransmissions and zero-window counts per direction, and the handshake RTT halves where
DeepFlow took exactly one sample. Differences that are not cloudtap bugs are listed in
``EXCEPTIONS`` and explained in docs/oracles.md.
"""

from __future__ import annotations

import ipaddress

import pytest
from oracle_flows import Mismatches, capture_of, golden_files, known_rtts, read_golden

GOLDENS = golden_files("deepflow")
RTT_TOLERANCE_US = 1.0 + 1e-6

#: (capture, check) -> why cloudtap and DeepFlow legitimately differ there (see docs/oracles.md).
EXCEPTIONS: dict[tuple[str, ...], str] = {
    ("deepflow/agent/resources/test/flow_generator/syn-retrans.pcap", "rtt"): (
        "SYN retransmitted: DeepFlow times the SYN-ACK from the first SYN, cloudtap from the latest"
    ),
    ("deepflow/agent/resources/test/flow_generator/handshake-error.pcap", "retrans"): (
        "frames 6-8 are client retransmissions (FIN, then data+FIN twice) in tshark and cloudtap; DeepFlow counts 2"
    ),
}


def perf(golden) -> dict[str, str]:
    return {r["field"]: r["value"] for r in read_golden(golden)}


def compare(pd: dict[str, str], got: dict, mm: Mismatches) -> None:
    """Compare the final PerfData with the sum of the capture's TCP flows."""
    fpd_ip = str(ipaddress.ip_address(pd["first_src"]))
    tcp = {k: t for k, t in got.items() if k[0] == 6}
    if not tcp:
        mm.add("keys", "cloudtap metered no TCP flow")
        return
    syn = sum(t.syn_count for t in tcp.values())
    synack = sum(t.synack_count for t in tcp.values())
    if (int(pd["syn"]), int(pd["synack"])) != (syn, synack):
        mm.add("syn", f"syn,synack deepflow ({pd['syn']}, {pd['synack']}) cloudtap ({syn}, {synack})")
    per_dir: dict[str, list[int]] = {"retrans": [0, 0], "zero_window": [0, 0]}
    for key, t in tcp.items():
        # index 0 of the totals is side a (key[1]); DeepFlow's 0 is the first packet's sender
        a_is_fpd = key[1] == fpd_ip
        for name in per_dir:
            ab, ba = getattr(t, name)
            per_dir[name][0] += ab if a_is_fpd else ba
            per_dir[name][1] += ba if a_is_fpd else ab
    for name, df in (("retrans", "retrans"), ("zero_window", "zero_win_count")):
        want = (int(pd[f"{df}_0"]), int(pd[f"{df}_1"]))
        if want != tuple(per_dir[name]):
            mm.add(name, f"{name} fpd,other deepflow {want} cloudtap {tuple(per_dir[name])}")
    if len(tcp) != 1:
        return
    (key, t), = tcp.items()
    if len(t.rtts) != 1:
        return
    client_is_a = next(iter(t.rtts.values()))[0]
    client_ip = key[1] if client_is_a else key[3]
    client_is_fpd = client_ip == fpd_ip
    # the server half is measured on the SYN-ACK (sent by the server), the client half on the ACK
    fpd_half, other_half = "rtt_0", "rtt_1"
    halves = {
        "server": other_half if client_is_fpd else fpd_half,
        "client": fpd_half if client_is_fpd else other_half,
    }
    for which, df in halves.items():
        if int(pd[f"{df}_count"]) != 1:
            continue  # several samples (retransmitted SYN/SYN-ACK): DeepFlow keeps sum and max
        want = float(pd[f"{df}_sum"])
        ours = known_rtts(t, which)
        if not ours:
            mm.add("rtt", f"rtt_{which}_us deepflow {want} cloudtap unknown")
        elif abs(ours[0] - want) > RTT_TOLERANCE_US:
            mm.add("rtt", f"rtt_{which}_us deepflow {want} cloudtap {ours[0]:.3f}")


@pytest.mark.oracle
def test_exceptions_name_existing_goldens():
    names = {capture_of(g) for g in GOLDENS}
    assert GOLDENS, "no deepflow goldens: run scripts/regen_golden.py"
    assert not [e[0] for e in EXCEPTIONS if e[0] not in names]


@pytest.mark.oracle
@pytest.mark.parametrize("golden", GOLDENS, ids=lambda g: capture_of(g))
def test_tcp_health_matches_deepflow(golden, metered):
    capture = capture_of(golden)
    _, got = metered(capture)
    mm = Mismatches(capture, EXCEPTIONS)
    compare(perf(golden), got, mm)
    mm.assert_clean()
