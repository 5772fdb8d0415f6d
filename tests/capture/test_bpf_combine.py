"""Tests for ``combine_programs``: several filters, each with its own snap length, as one BPF program.

Oracle: tcpdump (libpcap) itself. For each filter, ``tcpdump -r F -w - EXPR`` gives the frames it
accepts; the combined program must accept exactly their union, return the snap length of the first
filter that accepts each frame, and name that filter as the part that returned.
"""

from __future__ import annotations

import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from cloudtap.capture import _bpf_kernels as K
from cloudtap.capture.bpf import BPF_INSN_DTYPE, BpfProgram, compile_filter
from cloudtap.capture.bpf_combine import combine_programs
from cloudtap.capture.frames import FrameBatch
from cloudtap.errors import FilterError

PCAPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"
TCPDUMP = shutil.which("tcpdump")

# (capture, [(expression, snaplen), ...]) — the expressions read fields at shifted offsets (vlan),
# read the wire length, use scratch memory, and overlap, so order matters
CASES = [
    (
        "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/VlanPackets.pcap",
        [("vlan 118 and vlan 10 and icmp", 700), ("vlan and vlan and icmp", 300), ("not vlan", 90)],
    ),
    (
        "zeek/testing/btest/Traces/q-in-q.pcap",
        [("vlan and vlan and ip", 512), ("vlan 13 and vlan 10 and arp", 200), ("ether broadcast", 64)],
    ),
    (
        "arkime/tests/pcap/arkime_synthetic.pcap",
        [("udp port 53", 1000), ("tcp[tcpflags] & tcp-syn != 0", 128), ("ip6", 80), ("greater 300", 1500)],
    ),
    (
        "suricata-verify/tests/tcp-async-01/input.pcap",
        [("tcp and len > 100", 9000), ("tcp", 256)],
    ),
    (
        "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/frag_with_padding.pcap",
        [("vlan and ip[6:2] & 0x1fff != 0", 400), ("vlan and udp", 100), ("", 60)],
    ),
]


def _batch(frames: list[tuple[bytes, int]], linktype: int) -> FrameBatch:
    caps = np.array([len(b) for b, _ in frames], np.uint32)
    offset = np.zeros(len(frames), np.int64)
    if len(frames):
        offset[1:] = np.cumsum(caps[:-1], dtype=np.int64)
    return FrameBatch(
        data=np.frombuffer(b"".join(b for b, _ in frames), np.uint8).copy(),
        offset=offset,
        cap_len=caps,
        wire_len=np.array([w for _, w in frames], np.uint32),
        ts_ns=np.arange(len(frames), dtype=np.int64),
        linktype=np.full(len(frames), linktype, np.uint16),
        interface=np.zeros(len(frames), np.uint16),
    )


def _read(path: Path) -> tuple[list[tuple[bytes, int]], int]:
    from scapy.utils import RawPcapReader

    with RawPcapReader(str(path)) as reader:
        frames = [(bytes(d), int(m.wirelen)) for d, m in reader]
        return frames, int(reader.linktype)


def _tcpdump_mask(path: Path, expr: str, frames: list[tuple[bytes, int]]) -> np.ndarray:
    """Which frames tcpdump accepts for ``expr`` (located in the input by content and order)."""
    from scapy.utils import RawPcapReader

    out = subprocess.run(
        [TCPDUMP, "-r", str(path), "-w", "-", expr], capture_output=True, timeout=60, check=True
    )
    accepted = [bytes(d) for d, _ in RawPcapReader(BytesIO(out.stdout))] if out.stdout else []
    mask = np.zeros(len(frames), np.bool_)
    j = 0
    for i, (data, _) in enumerate(frames):
        if j < len(accepted) and data == accepted[j]:
            mask[i] = True
            j += 1
    assert j == len(accepted), f"{expr!r}: a tcpdump frame was not found in {path.name}"
    return mask


@pytest.mark.oracle
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
@pytest.mark.parametrize(("name", "parts"), CASES, ids=[c[0].rsplit("/", 1)[-1] for c in CASES])
def test_combined_equals_the_or_of_single_filters(name: str, parts: list[tuple[str, int]]) -> None:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    frames, linktype = _read(path)
    batch = _batch(frames, linktype)
    masks = np.array([_tcpdump_mask(path, expr or "", frames) for expr, _ in parts])
    prog = combine_programs(parts, linktype)
    assert prog.snaplen == max(s for _, s in parts) and len(prog.parts) == len(parts)
    union = masks.any(axis=0)
    assert np.array_equal(prog.match(batch), union)
    rets, part = prog.returns(batch)
    first = np.where(union, np.argmax(masks, axis=0), -1)
    assert np.array_equal(part, first)
    snaplens = np.array([s for _, s in parts], np.uint32)
    assert np.array_equal(rets, np.where(union, snaplens[np.maximum(first, 0)], 0))
    assert len(set(first.tolist())) >= 2  # the case exercises more than one outcome
    prog.as_sock_fprog()  # the kernel's rules: forward jumps only, within BPF_MAXINSNS


@pytest.mark.oracle
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
def test_two_vlan_policies_no_longer_interact() -> None:
    """libpcap compiles ``(vlan 118 and vlan 10 and icmp) or (vlan and vlan and icmp)`` with the second
    term read past the first term's two tags as well (it matches half the frames it should); chained
    programs each start fresh, so the combination is the OR of the two filters."""
    path = PCAPS / "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/VlanPackets.pcap"
    if not path.exists():
        pytest.skip(f"{path} not available")
    frames, linktype = _read(path)
    batch = _batch(frames, linktype)
    a, b = "vlan 118 and vlan 10 and icmp", "vlan and vlan and icmp"
    union = _tcpdump_mask(path, a, frames) | _tcpdump_mask(path, b, frames)
    one_expression = compile_filter(f"({a}) or ({b})", linktype).match(batch)
    assert int(union.sum()) == 20 and int(one_expression.sum()) == 10  # the old interaction, in libpcap
    combined = combine_programs([(a, 512), (b, 256)], linktype)
    assert np.array_equal(combined.match(batch), union)


def test_rejects_become_jumps_to_the_next_part() -> None:
    a = compile_filter("tcp port 80", snaplen=600)
    b = compile_filter("udp", snaplen=200)
    prog = combine_programs([("tcp port 80", 600), ("udp", 200)])
    n = len(a)
    assert prog.parts == (0, n) and len(prog) == n + len(b)
    first = prog.instructions[:n]
    was_reject = (a.instructions["code"] == K.RET_K) & (a.instructions["k"] == 0)
    assert was_reject.any()
    ja = np.flatnonzero(was_reject)
    assert (first["code"][ja] == K.JA).all()
    assert ((ja + 1 + first["k"][ja].astype(np.int64)) == n).all()  # each lands on the next part
    same = ~was_reject
    assert np.array_equal(first[same], a.instructions[same])  # everything else untouched
    assert np.array_equal(prog.instructions[n:], b.instructions)  # the last part keeps its ret #0
    accepts = prog.instructions[(prog.instructions["code"] == K.RET_K) & (prog.instructions["k"] != 0)]
    assert sorted(set(accepts["k"].tolist())) == [200, 600]


def test_single_part_is_the_plain_program() -> None:
    prog = combine_programs([("icmp", 128)])
    assert np.array_equal(prog.instructions, compile_filter("icmp", snaplen=128).instructions)
    assert prog.parts == (0,)


def test_bad_parts_are_refused() -> None:
    with pytest.raises(FilterError, match="at least one"):
        combine_programs([])
    with pytest.raises(FilterError, match="snaplen"):
        combine_programs([("tcp", 0)])
    with pytest.raises(FilterError, match="syntax error"):
        combine_programs([("tcp", 100), ("udp prot 5", 100)])
    insns = np.array([(K.RET_K, 0, 0, 1), (K.RET_K, 0, 0, 0)], dtype=BPF_INSN_DTYPE)
    with pytest.raises(FilterError, match="part starts"):
        BpfProgram("<hand>", 1, 1, insns, parts=(1,))
    with pytest.raises(FilterError, match="part starts"):
        BpfProgram("<hand>", 1, 1, insns, parts=(0, 5))


def test_returns_of_a_plain_program_and_of_faults() -> None:
    frame = bytes(12) + b"\x08\x00" + bytes([0x45]) + bytes(8) + b"\x06" + bytes(40)  # IPv4 TCP, 64 bytes
    batch = _batch([(frame, 100), (frame[:54], 100), (frame[:20], 100), (b"\x00" * 14, 60)], 1)
    rets, part = compile_filter("tcp", snaplen=96).returns(batch)
    assert rets.tolist() == [96, 96, 0, 0] and part.tolist() == [0, 0, -1, -1]
    # tcp[20:4] reads bytes 54..57: the 54-byte frame faults there, which ends the whole program (as in
    # the kernel): the second part never sees it. The known difference from the OR of the two filters.
    prog = combine_programs([("tcp[20:4] = 1", 300), ("ip", 100)])
    rets, part = prog.returns(batch)
    assert rets.tolist() == [100, 0, 0, 0] and part.tolist() == [1, -1, -1, -1]
    either = compile_filter("tcp[20:4] = 1").match(batch) | compile_filter("ip").match(batch)
    assert either.tolist() == [True, True, True, False]
