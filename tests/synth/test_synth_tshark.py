"""The synthetic captures, judged by tshark: no malformed frames or bad checksums, and the truth
table agrees with tshark's own view (per-flow counts, retransmissions, zero windows, RTTs, VNIs)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from cloudtap.synth import SynthResult, builtin_scenario, write_pcap
from cloudtap.synth.scenario import with_overrides

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]

CHECKS = ["-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"]
#: TCP analysis verdicts that a consistent seq/ack plan never triggers
ODD_TCP = (
    "tcp.analysis.duplicate_ack",
    "tcp.analysis.out_of_order",
    "tcp.analysis.lost_segment",
    "tcp.analysis.ack_lost_segment",
    "tcp.analysis.spurious_retransmission",
    "tcp.analysis.keep_alive",
    "tcp.analysis.zero_window_probe",
    "tcp.analysis.window_full",
    "tcp.analysis.reused_ports",
)


def _tshark(path: Path, *args: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(path), *args], capture_output=True, text=True, check=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def _fields(path: Path, *fields: str, display: str | None = None) -> list[list[str]]:
    args = ["-T", "fields", "-E", "occurrence=l"]
    for f in fields:
        args += ["-e", f]
    return _tshark(path, *args, *(["-Y", display] if display else []))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    scn = with_overrides(builtin_scenario("small-cloud"), duration=150)
    return write_pcap(scn, tmp_path_factory.mktemp("tshark") / "small-cloud.pcap")


def test_no_malformed_frames_or_bad_checksums(small: SynthResult) -> None:
    bad = _tshark(
        small.path,
        *CHECKS,
        "-Y",
        "_ws.malformed || _ws.expert.severity >= error",
        "-T",
        "fields",
        "-e",
        "frame.number",
        "-e",
        "_ws.expert.message",
    )
    assert bad == []


def test_every_flow_matches_tshark_packet_and_byte_counts(small: SynthResult) -> None:
    rows = _fields(
        small.path,
        "ip.proto",
        "ip.src",
        "ip.dst",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
        "icmp.ident",
        "ip.len",
    )
    pkts: Counter[tuple[str, ...]] = Counter()
    nbytes: Counter[tuple[str, ...]] = Counter()
    for proto, src, dst, tsp, tdp, usp, udp, ident, iplen in rows:
        sp, dp = {"6": (tsp, tdp), "17": (usp, udp)}.get(proto, (ident, ident))
        key = (proto, src, sp, dst, dp)
        pkts[key] += 1
        nbytes[key] += int(iplen)
    assert len(rows) == small.packets
    truth = small.truth.to_pylist()
    assert len(truth) == small.flows > 500
    for r in truth:
        c2s = (str(r["proto"]), r["client_ip"], str(r["client_port"]), r["server_ip"], str(r["server_port"]))
        s2c = (c2s[0], c2s[3], c2s[4], c2s[1], c2s[2])
        assert (pkts[c2s], pkts[s2c]) == (r["packets_c2s"], r["packets_s2c"]), c2s
        assert (nbytes[c2s], nbytes[s2c]) == (r["bytes_c2s"], r["bytes_s2c"]), c2s
    assert sum(pkts.values()) == sum(r["packets_c2s"] + r["packets_s2c"] for r in truth)


def test_retransmissions_and_zero_windows_match_tshark(small: SynthResult) -> None:
    rows = _fields(
        small.path,
        "tcp.analysis.retransmission",
        "tcp.analysis.zero_window",
        display="tcp.analysis.retransmission || tcp.analysis.zero_window",
    )
    retrans = sum(1 for r in rows if r[0])
    zero = sum(1 for r in rows if r[1])
    truth = small.truth.to_pylist()
    assert retrans == sum(r["retrans_c2s"] + r["retrans_s2c"] for r in truth) > 0
    assert zero == sum(r["zero_window_c2s"] + r["zero_window_s2c"] for r in truth) > 0
    assert _fields(small.path, "frame.number", display=" || ".join(ODD_TCP)) == []


def test_handshake_rtts_match_tshark(small: SynthResult) -> None:
    rows = _fields(
        small.path,
        "ip.src",
        "tcp.srcport",
        "ip.dst",
        "tcp.dstport",
        "tcp.flags.ack",
        "frame.time_epoch",
        display="tcp.flags.syn == 1 && !tcp.analysis.retransmission",
    )
    syn: dict[tuple[str, ...], float] = {}
    synack: dict[tuple[str, ...], float] = {}
    for src, sp, dst, dp, ack, ts in rows:
        if ack in ("0", "False"):
            syn[(src, sp, dst, dp)] = float(ts)
        else:
            synack[(dst, dp, src, sp)] = float(ts)
    checked = 0
    for r in small.truth.to_pylist():
        key = (r["client_ip"], str(r["client_port"]), r["server_ip"], str(r["server_port"]))
        if r["rtt_server_us"] >= 0:
            assert (synack[key] - syn[key]) * 1e6 == pytest.approx(r["rtt_server_us"], abs=0.5)
            checked += 1
        elif r["proto"] == 6:
            assert key not in synack
    assert checked > 200


@pytest.mark.parametrize(
    ("encap", "field"), [("vxlan", "vxlan.vni"), ("gre-teb", "gre.key"), ("erspan2", "erspan.spanid")]
)
def test_tunnels_decode_with_the_right_id(tmp_path: Path, encap: str, field: str) -> None:
    scn = with_overrides(builtin_scenario("small-cloud"), duration=30, encapsulation=encap)
    res = write_pcap(scn, tmp_path / f"{encap}.pcap")
    assert _tshark(res.path, *CHECKS, "-Y", "_ws.malformed || _ws.expert.severity >= error") == []
    rows = _fields(
        res.path, "ip.src", "ip.dst", "ip.proto", "tcp.srcport", "udp.srcport", "icmp.ident", field
    )
    seen: dict[tuple[str, str, str], set[str]] = {}
    for src, dst, proto, tsp, usp, ident, tid in rows:
        port = {"6": tsp, "17": usp}.get(proto, ident)
        seen.setdefault((src, dst, port), set()).add(int(tid, 0) if tid else None)
    tunnelled = 0
    for r in res.truth.to_pylist():
        ids = seen[(r["client_ip"], r["server_ip"], str(r["client_port"]))]
        expected = r["tunnel_id"] if r["tunnel_type"] else None
        assert ids == {expected}, (r["client_vm"], r["server_vm"], ids, expected)
        tunnelled += bool(r["tunnel_type"])
    assert tunnelled > 0.5 * res.flows
    if encap == "vxlan":
        vnis = {r["tunnel_id"] for r in res.truth.to_pylist() if r["tunnel_type"]}
        assert vnis <= {5001, 5002, 5003} and len(vnis) >= 2
