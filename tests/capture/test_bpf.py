"""Tests for cloudtap.capture.bpf: libpcap compilation, the numba BPF VM, FrameFilter, socket attach.

The oracle for real captures is tcpdump itself: ``tcpdump -r F -w - EXPR`` writes the frames it
accepts; they are located in the input by content (equal frames get equal verdicts), which gives
the exact set of accepted frame indices. The oracle for single instructions is libpcap's own
interpreter, ``bpf_filter``, called through ctypes.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtap.capture import _bpf_kernels as K
from cloudtap.capture.bpf import (
    BPF_INSN_DTYPE,
    SO_ATTACH_FILTER,
    BpfProgram,
    FrameFilter,
    compile_filter,
)
from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.libpcap import load_libpcap
from cloudtap.errors import FilterError

PCAPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"
TCPDUMP = shutil.which("tcpdump")

CAPTURES = [
    "suricata-verify/tests/tcp-async-01/input.pcap",  # Ethernet, TCP
    "arkime/tests/pcap/arkime_synthetic.pcap",  # Ethernet, TCP/UDP/DNS/ICMP/IPv6 mix
    "zeek/testing/btest/Traces/tunnels/gre-sample.pcap",  # GRE, ICMP, DNS
    "zeek/testing/btest/Traces/tunnels/gtp/gtp1_gn_normal_incl_fragmentation.pcap",  # IPv4 fragments
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/VlanPackets.pcap",  # VLAN, ICMP, LLC
    "zeek/testing/btest/Traces/q-in-q.pcap",  # QinQ, ARP
    "tcpdump/tests/802.1ad_QinQ.pcap",  # 802.1ad
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/frag_with_padding.pcap",  # VLAN + fragments
    "zeek/testing/btest/Traces/vlan-pcp-dei.pcapng",  # pcapng, VLAN
    "suricata-verify/tests/community-id-ipv6/input.pcap",  # IPv6 TCP
    "libpcap/tests/filter/ipv6_ext_headers.pcap",  # IPv6 extension headers
    "zeek/testing/btest/Traces/dns/mdns.pcap",  # mDNS v4/v6, IGMP
    "tcpdump/tests/resp_1_benchmark.pcap",  # Linux SLL
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/sll2.pcap",  # Linux SLL2
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/raw_ip.pcap",  # raw IP (LINKTYPE 101)
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_ipv6_http_stream.pcap",  # raw IPv6
    "suricata-verify/tests/linktype-228/flow-test-01.pcap",  # LINKTYPE_IPV4
    "suricata-verify/tests/http2-range/http2-range.pcap",  # BSD loopback (NULL)
    "zeek/testing/btest/Traces/llc.pcap",  # FDDI, snaplen-truncated frames
]

EXPRESSIONS = [
    "tcp",
    "udp port 53",
    "HOST",  # replaced by a host seen in the capture
    "net 10.0.0.0/8",
    "vlan",
    "vlan and tcp",
    "vlan and icmp",
    "ip6",
    "tcp[tcpflags] & tcp-syn != 0",
    "icmp",
    "not arp",
    "portrange 1000-2000",
    "greater 200",
    "ip[6:2] & 0x1fff != 0",
    # arithmetic, scratch memory and X-register paths of the VM
    "len >= 100 and len <= 600",
    "ip[2:2] / 4 - (ip[0] & 0xf) * 3 > 100",
    "udp[8:4] % 7 = 3 or tcp[4:4] % 5 = 1",
    "(ip[2:2] - ((ip[0] & 0xf) << 2)) >> 1 > 200",
    "ip[8] ^ 0x40 = 0 or ip[8] | 1 = 129",
    "ip6 protochain 17",
]


def _read_capture(path: Path) -> tuple[FrameBatch, list[tuple[bytes, int]]]:
    """Read a pcap or pcapng file into a FrameBatch, and the (bytes, wire_len) of each frame."""
    from scapy.utils import RawPcapNgReader, RawPcapReader

    with open(path, "rb") as fh:
        magic = fh.read(4)
    pcapng = magic == b"\x0a\x0d\x0d\x0a"
    reader = RawPcapNgReader(str(path)) if pcapng else RawPcapReader(str(path))
    frames: list[tuple[bytes, int]] = []
    lts: list[int] = []
    with reader:
        for data, meta in reader:
            frames.append((bytes(data), int(meta.wirelen)))
            lts.append(int(meta.linktype) if pcapng else int(reader.linktype))
    return _batch(frames, lts), frames


def _batch(frames: list[tuple[bytes, int]], linktypes: list[int]) -> FrameBatch:
    """Build a FrameBatch over ``frames`` (bytes, wire_len) with the given link types."""
    caps = np.array([len(b) for b, _ in frames], np.uint32)
    offset = np.zeros(len(frames), np.int64)
    if len(frames):
        offset[1:] = np.cumsum(caps[:-1], dtype=np.int64)
    data = np.frombuffer(b"".join(b for b, _ in frames), np.uint8).copy()
    return FrameBatch(
        data=data,
        offset=offset,
        cap_len=caps,
        wire_len=np.array([w for _, w in frames], np.uint32),
        ts_ns=np.arange(len(frames), dtype=np.int64),
        linktype=np.array(linktypes, np.uint16),
        interface=np.zeros(len(frames), np.uint16),
    )


def _read_pcap_bytes(raw: bytes) -> list[tuple[bytes, int]]:
    """Parse a classic pcap byte stream (as tcpdump -w - writes it) into (bytes, wire_len)."""
    if len(raw) < 24:
        return []
    endian = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out, pos = [], 24
    while pos + 16 <= len(raw):
        _, _, caplen, wirelen = struct.unpack_from(endian + "IIII", raw, pos)
        out.append((raw[pos + 16 : pos + 16 + caplen], wirelen))
        pos += 16 + caplen
    return out


def _tcpdump_indices(path: Path, expr: str, frames: list[tuple[bytes, int]]) -> list[int] | str:
    """Indices of the frames tcpdump accepts for ``expr``, or tcpdump's error text."""
    proc = subprocess.run([TCPDUMP, "-r", str(path), "-w", "-", expr], capture_output=True, timeout=60)
    if proc.returncode != 0:
        return proc.stderr.decode(errors="replace")
    accepted = _read_pcap_bytes(proc.stdout)
    indices, j = [], 0
    for i, frame in enumerate(frames):
        if j < len(accepted) and frame == accepted[j]:
            indices.append(i)
            j += 1
    assert j == len(accepted), f"{expr!r}: tcpdump output frame {j} not found in {path.name}"
    return indices


def _some_host(path: Path) -> str:
    """A 'host X' expression naming an IPv4 address that occurs in the capture."""
    proc = subprocess.run([TCPDUMP, "-r", str(path), "-n", "-c", "5", "ip"], capture_output=True, timeout=60)
    found = re.findall(r"IP (\d+\.\d+\.\d+\.\d+)", proc.stdout.decode(errors="replace"))
    return f"host {found[-1]}" if found else "host 192.0.2.1"


@pytest.mark.oracle
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
@pytest.mark.parametrize("name", CAPTURES)
def test_matches_tcpdump_on_real_captures(name: str) -> None:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    batch, frames = _read_capture(path)
    assert len(batch) > 0
    linktype = int(batch.linktype[0])
    assert bool((batch.linktype == linktype).all())
    failures, compared = [], 0
    for expr in EXPRESSIONS:
        if expr == "HOST":
            expr = _some_host(path)
        expected = _tcpdump_indices(path, expr, frames)
        if isinstance(expected, str):
            with pytest.raises(FilterError):
                compile_filter(expr, linktype)
            continue
        got = np.flatnonzero(compile_filter(expr, linktype).match(batch)).tolist()
        compared += 1
        if got != expected:
            failures.append(
                f"{expr!r}: VM {got[:10]}.. ({len(got)}) vs tcpdump {expected[:10]}.. ({len(expected)})"
            )
    assert not failures, f"{name}: " + "; ".join(failures)
    assert compared >= 5


def _pcap_frames(path: Path) -> tuple[FrameBatch, list[tuple[bytes, int]]]:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return _read_capture(path)


@pytest.mark.oracle
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
def test_frame_filter_mixed_linktypes_and_counters() -> None:
    eth_path = PCAPS / "arkime/tests/pcap/arkime_synthetic.pcap"
    sll_path = PCAPS / "tcpdump/tests/resp_1_benchmark.pcap"
    raw_path = PCAPS / "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/raw_ip.pcap"
    parts = [(p, *_pcap_frames(p)) for p in (eth_path, sll_path, raw_path)]
    expr = "tcp and (port 6379 or port 80) or udp"
    frames: list[tuple[bytes, int]] = []
    lts: list[int] = []
    expected: list[int] = []
    # interleave the three captures so one batch holds all link types in mixed order
    order = []
    for src, (_, _, fr) in enumerate(parts):
        order += [(k * len(parts) + src, src, k) for k in range(len(fr))]
    order.sort()
    accepted = {src: set(_tcpdump_indices(p, expr, fr)) for src, (p, _, fr) in enumerate(parts)}
    for pos, (_, src, k) in enumerate(order):
        frames.append(parts[src][2][k])
        lts.append(int(parts[src][1].linktype[0]))
        if k in accepted[src]:
            expected.append(pos)
    batch = _batch(frames, lts)
    assert len(set(lts)) == 3
    flt = FrameFilter(expr)
    got = flt.mask(batch)
    assert np.flatnonzero(got).tolist() == expected
    assert flt.matched == len(expected) and flt.rejected == len(batch) - len(expected)
    again = flt.mask(batch)  # cached programs, counters accumulate
    assert np.array_equal(again, got)
    assert flt.matched == 2 * len(expected)
    assert set(flt._programs) >= set(lts)


def test_frame_filter_without_expression_accepts_all() -> None:
    batch = _batch([(b"\x00" * 20, 20), (b"\x01" * 10, 60)], [1, 113])
    for expr in (None, "", "   "):
        flt = FrameFilter(expr)
        assert flt.mask(batch).tolist() == [True, True]
        assert flt.matched == 2 and flt.rejected == 0
        assert flt.program(1) is None
    empty = FrameFilter("tcp").mask(FrameBatch.empty())
    assert empty.shape == (0,) and empty.dtype == np.bool_


def test_syntax_error_names_expression() -> None:
    with pytest.raises(FilterError) as err:
        compile_filter("tcp prot 80")
    assert "syntax error" in str(err.value) and "tcp prot 80" in str(err.value)
    with pytest.raises(FilterError, match="syntax error"):
        FrameFilter("host and and")
    # valid grammar that a link type cannot express: libpcap's own message
    with pytest.raises(FilterError, match="VLAN"):
        compile_filter("vlan", linktype=101)


def test_frame_filter_defers_linktype_specific_errors() -> None:
    flt = FrameFilter("vlan")  # fine for Ethernet, not for raw IP
    batch = _batch([(bytes(40), 40)], [101])
    with pytest.raises(FilterError, match="linktype 101"):
        flt.mask(batch)


def test_compiled_program_matches_tcpdump_listing() -> None:
    prog = compile_filter("ip", linktype=101, snaplen=65535)
    # tcpdump -d 'ip' on LINKTYPE_RAW: ldb [0]; and #0xf0; jeq #0x40 jt 3 jf 4; ret #65535; ret #0
    assert prog.instructions.dtype == BPF_INSN_DTYPE
    assert prog.instructions["code"].tolist() == [0x30, 0x54, 0x15, 0x06, 0x06]
    assert prog.instructions["k"].tolist() == [0, 0xF0, 0x40, 65535, 0]
    assert (prog.instructions["jt"][2], prog.instructions["jf"][2]) == (0, 1)
    assert not prog.instructions.flags.writeable
    assert len(compile_filter("tcp port 80", optimize=False)) > len(compile_filter("tcp port 80"))


def test_match_rejects_wrong_linktype() -> None:
    batch = _batch([(bytes(60), 60)], [113])
    with pytest.raises(ValueError, match="linktype"):
        compile_filter("tcp").match(batch)


def _ip_tcp_frame(dport: int, syn: bool) -> bytes:
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    ip = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 0x50, 0x02 if syn else 0x10, 1024, 0, 0)
    return eth + ip + tcp


def test_truncated_frames_reject_out_of_bounds_loads() -> None:
    full = _ip_tcp_frame(80, True)
    frames = [(full, len(full)), (full[:36], len(full)), (full[:14], len(full)), (b"", 0)]
    batch = _batch(frames, [1] * 4)
    assert compile_filter("tcp port 80").match(batch).tolist() == [True, False, False, False]
    # 'greater' reads the wire length, not the captured bytes
    assert compile_filter("greater 50").match(batch).tolist() == [True, True, True, False]
    # a read-only buffer (a mapped file) and the frame's own port/flag bytes
    batch.data.setflags(write=False)
    other = _batch([(_ip_tcp_frame(8080, False), 54), (_ip_tcp_frame(80, False), 54)], [1, 1])
    other.data.setflags(write=False)
    assert compile_filter("tcp port 80").match(other).tolist() == [False, True]
    assert compile_filter("tcp[tcpflags] & tcp-syn != 0").match(batch).tolist() == [True, False, False, False]


def _prog(insns: list[tuple[int, int, int, int]]) -> BpfProgram:
    arr = np.array(insns, dtype=BPF_INSN_DTYPE)
    return BpfProgram(expression="<hand>", linktype=1, snaplen=65535, instructions=arr)


def test_invalid_programs_are_refused() -> None:
    with pytest.raises(FilterError, match="unknown opcode"):
        _prog([(0xFF, 0, 0, 0), (K.RET_K, 0, 0, 1)])
    with pytest.raises(FilterError, match="jump out"):
        _prog([(K.JEQ_K, 5, 0, 0), (K.RET_K, 0, 0, 1)])
    with pytest.raises(FilterError, match="scratch"):
        _prog([(K.ST, 0, 0, 16), (K.RET_K, 0, 0, 1)])
    with pytest.raises(FilterError, match="ret"):
        _prog([(K.LD_IMM, 0, 0, 1)])
    with pytest.raises(FilterError, match="division"):
        _prog([(K.DIV_K, 0, 0, 0), (K.RET_A, 0, 0, 0)])


def test_division_by_zero_register_and_backward_jumps() -> None:
    batch = _batch([(bytes(20), 20)], [1])
    div_x = _prog([(K.LD_IMM, 0, 0, 7), (K.LDX_IMM, 0, 0, 0), (K.DIV_X, 0, 0, 0), (K.RET_K, 0, 0, 1)])
    assert div_x.match(batch).tolist() == [False]
    # ja -1 is an infinite loop (rejected by validation); a bounded backward loop terminates
    loop = _prog(
        [
            (K.LD_IMM, 0, 0, 0),  # 0: A = 0
            (K.ADD_K, 0, 0, 1),  # 1: A += 1
            (K.JGE_K, 1, 0, 3),  # 2: if A >= 3 goto 4
            (K.JA, 0, 0, (1 << 32) - 3),  # 3: goto 1
            (K.RET_A, 0, 0, 0),  # 4: return A
        ]
    )
    assert loop.match(batch).tolist() == [True]
    endless = _prog([(K.LD_IMM, 0, 0, 0), (K.JA, 0, 0, (1 << 32) - 2), (K.RET_K, 0, 0, 1)])
    assert endless.match(batch).tolist() == [False]  # stops after MAX_BACKWARD_JUMPS
    with pytest.raises(FilterError, match="backwards"):
        loop.as_sock_fprog()


# ---- single instructions against libpcap's interpreter -------------------------------------------

_ALU = [
    K.ADD_K,
    K.SUB_K,
    K.MUL_K,
    K.DIV_K,
    K.OR_K,
    K.AND_K,
    K.LSH_K,
    K.RSH_K,
    K.MOD_K,
    K.XOR_K,
    K.ADD_X,
    K.SUB_X,
    K.MUL_X,
    K.DIV_X,
    K.OR_X,
    K.AND_X,
    K.LSH_X,
    K.RSH_X,
    K.MOD_X,
    K.XOR_X,
    K.NEG,
]
_LOADS = [
    K.LD_W_ABS,
    K.LD_H_ABS,
    K.LD_B_ABS,
    K.LD_W_IND,
    K.LD_H_IND,
    K.LD_B_IND,
    K.LD_W_LEN,
    K.LDX_MSH_B,
    K.LDX_W_LEN,
]
_JUMPS = [K.JEQ_K, K.JGT_K, K.JGE_K, K.JSET_K, K.JEQ_X, K.JGT_X, K.JGE_X, K.JSET_X]
_MISC = [K.TAX, K.TXA, K.ST, K.STX, K.LD_MEM, K.LDX_MEM, K.LD_IMM, K.LDX_IMM]

_u32 = st.one_of(st.integers(0, 40), st.integers(0, 0xFFFFFFFF), st.sampled_from([0xFFFFFFFF, 1 << 31]))


@st.composite
def _programs(draw: st.DrawFn) -> list[tuple[int, int, int, int]]:
    n = draw(st.integers(1, 14))
    # libpcap 1.10 leaves scratch memory uninitialised: define every word first, as libpcap's
    # own programs do before reading one
    insns = [(K.LD_IMM, 0, 0, draw(_u32))] + [(K.ST, 0, 0, w) for w in range(16)]
    insns.append((K.LD_IMM, 0, 0, 0))
    for pc in range(n):
        code = draw(st.sampled_from(_ALU + _LOADS + _JUMPS + _MISC))
        k = draw(_u32)
        jt = jf = 0
        if code in (K.ST, K.STX, K.LD_MEM, K.LDX_MEM):
            k %= 16
        elif code in (K.DIV_K, K.MOD_K) and k == 0:
            k = 3
        elif code in (K.LSH_K, K.RSH_K):
            k %= 32
        elif code in _JUMPS:
            room = n - pc  # targets pc+1+j must be <= n (the final ret)
            jt, jf = draw(st.integers(0, room - 1)), draw(st.integers(0, room - 1))
        elif code == K.LDX_IMM and draw(st.booleans()):
            k = draw(st.integers(0, 40))  # small X so shifts and IND loads stay interesting
        insns.append((code, jt, jf, k))
    insns.append((draw(st.sampled_from([K.RET_A, K.RET_K])), 0, 0, draw(_u32)))
    return insns


def _libpcap_filter(insns: list[tuple[int, int, int, int]], pkt: bytes, wirelen: int) -> int:
    lib = load_libpcap()
    arr = np.array(insns, dtype=BPF_INSN_DTYPE)
    buf = ctypes.create_string_buffer(pkt, max(len(pkt), 1))
    lib.bpf_filter.restype = ctypes.c_uint
    lib.bpf_filter.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
    return int(lib.bpf_filter(arr.ctypes.data, buf, wirelen, len(pkt)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=_programs(), pkts=st.lists(st.binary(min_size=0, max_size=48), min_size=1, max_size=4))
def test_vm_agrees_with_libpcap_interpreter(prog: list[tuple[int, int, int, int]], pkts: list[bytes]) -> None:
    batch = _batch([(p, len(p) + 3) for p in pkts], [1] * len(pkts))
    got = _prog(prog).match(batch)
    for i, pkt in enumerate(pkts):
        expected = _libpcap_filter(prog, pkt, len(pkt) + 3) != 0
        assert bool(got[i]) == expected, (prog, pkt)


def test_shift_by_register_of_32_or_more_gives_zero() -> None:
    batch = _batch([(bytes(4), 4)], [1])
    for code in (K.LSH_X, K.RSH_X):
        prog = _prog([(K.LD_IMM, 0, 0, 0xFFFF), (K.LDX_IMM, 0, 0, 33), (code, 0, 0, 0), (K.RET_A, 0, 0, 0)])
        assert prog.match(batch).tolist() == [False]
    ok = _prog([(K.LD_IMM, 0, 0, 1), (K.LDX_IMM, 0, 0, 31), (K.LSH_X, 0, 0, 0), (K.RET_A, 0, 0, 0)])
    assert ok.match(batch).tolist() == [True]


# ---- live socket ---------------------------------------------------------------------------------


def test_as_sock_fprog_attaches_to_packet_socket() -> None:
    prog = compile_filter("tcp port 80")
    fprog, keepalive = prog.as_sock_fprog()
    assert len(fprog) == ctypes.sizeof(ctypes.c_void_p) * 2
    assert struct.unpack_from("H", fprog)[0] == len(prog)
    assert bytes(keepalive) == prog.instructions.tobytes()
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except PermissionError:
        pytest.skip("AF_PACKET needs CAP_NET_RAW")
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        bad = bytearray(fprog)
        bad[0:2] = struct.pack("H", 0)  # zero-length program: the kernel must refuse it
        with pytest.raises(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(bad))


def test_vlan_aware_matches_tagged_and_untagged_frames_alike() -> None:
    from cloudtap.capture.bpf import vlan_aware

    assert vlan_aware("host 10.0.0.1") == "(host 10.0.0.1) or (vlan and (host 10.0.0.1))"
    assert vlan_aware("vlan 101 and tcp") == "vlan 101 and tcp"  # the user said where the tag is
    assert vlan_aware("  ") == ""
    import scapy.all as scapy

    plain = bytes(scapy.Ether() / scapy.IP(src="10.0.0.1", dst="10.0.0.2") / scapy.TCP(dport=873))
    tagged = bytes(
        scapy.Ether()
        / scapy.Dot1Q(vlan=101)
        / scapy.IP(src="10.0.0.1", dst="10.0.0.2")
        / scapy.TCP(dport=873)
    )
    other = bytes(
        scapy.Ether() / scapy.Dot1Q(vlan=101) / scapy.IP(src="10.0.0.3", dst="10.0.0.2") / scapy.TCP()
    )
    batch = _batch([(f, len(f)) for f in (plain, tagged, other)], [1, 1, 1])
    assert FrameFilter(vlan_aware("host 10.0.0.1 and port 873")).mask(batch).tolist() == [True, True, False]
    assert FrameFilter("host 10.0.0.1 and port 873").mask(batch).tolist() == [True, False, False]
