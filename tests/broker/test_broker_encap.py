"""Broker copies: VLAN strip, truncation (rule, MTU) and the encapsulation headers, decoded by tshark."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cloudtap.broker.config import Destination
from cloudtap.broker.encap import DestinationTable, build_copies, max_inner
from cloudtap.capture.frames import FrameBatch

VM_MAC = bytes.fromhex("02aabbccdd01")
PEER_MAC = bytes.fromhex("02aabbccdd02")


def udp_frame(payload: int, tags: list[tuple[int, int]] = ()) -> bytes:  # type: ignore[assignment]
    """Ethernet (+ tags as (tpid, vid)) / IPv4 / UDP frame with ``payload`` bytes."""
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28 + payload, 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    )
    udp = struct.pack("!HHHH", 1234, 5000, 8 + payload, 0)
    tag_bytes = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in tags)
    return PEER_MAC + VM_MAC + tag_bytes + b"\x08\x00" + ip + udp + (bytes(range(256)) * 64)[:payload]


def batch(frames: list[bytes], ts0: int = 1_700_000_000_123_456_789) -> FrameBatch:
    data = np.frombuffer(b"".join(frames), np.uint8).copy()
    lens = np.array([len(f) for f in frames], np.uint32)
    offs = np.concatenate([[0], np.cumsum(lens[:-1], dtype=np.int64)]).astype(np.int64)
    n = len(frames)
    return FrameBatch(data, offs, lens, lens.copy(), ts0 + np.arange(n, dtype=np.int64) * 1000,
                      np.ones(n, np.uint16), np.zeros(n, np.uint16))  # fmt: skip


def copies_of(dest: Destination, frames: FrameBatch, limit: int = 0, strip: bool = False) -> list[bytes]:
    n = len(frames)
    table = DestinationTable([dest])
    c = build_copies(frames, table, np.arange(n), np.zeros(n, np.int32), np.full(n, limit, np.int32),
                     np.full(n, strip, np.bool_))  # fmt: skip
    return [bytes(c.buffer[o : o + ln]) for o, ln in zip(c.offset, c.length, strict=True)]


def test_vxlan_header_and_rule_truncation() -> None:
    frames = batch([udp_frame(200), udp_frame(10)])
    dest = Destination(name="v", encap="vxlan", address="192.0.2.1", vni=0xABCDE)
    out = copies_of(dest, frames, limit=64)
    assert out[0][:8] == bytes([0x08, 0, 0, 0, 0x0A, 0xBC, 0xDE, 0])
    assert out[0][8:] == bytes(frames.data[:64])
    assert out[1][8:] == udp_frame(10)  # shorter than the limit: whole


def test_vlan_strip_removes_stacked_tags_and_mtu_cuts() -> None:
    tagged = udp_frame(1400, [(0x88A8, 100), (0x8100, 200)])
    frames = batch([tagged])
    dest = Destination(name="g", encap="gre", address="192.0.2.1", mtu=1000)
    c = build_copies(frames, DestinationTable([dest]), np.zeros(1, np.int64), np.zeros(1, np.int32),
                     np.zeros(1, np.int32), np.ones(1, np.bool_))  # fmt: skip
    body = bytes(c.buffer[c.offset[0] : c.offset[0] + c.length[0]])
    assert body[:4] == bytes([0, 0, 0x65, 0x58])
    untagged = tagged[:12] + tagged[20:]
    assert body[4:] == untagged[: max_inner(dest)] and max_inner(dest) == 1000 - 20 - 4
    assert bool(c.mtu_cut[0])


def gre_pcap(path: Path, copies: list[bytes], ts_ns: int) -> None:
    """Each copy behind Ethernet / IPv4 (protocol 47), as the kernel sends it, in a pcap file."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, body in enumerate(copies):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), i, 0, 64, 47, 0, bytes([192, 0, 2, 9]),
                         bytes([192, 0, 2, 1]))  # fmt: skip
        frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + body
        out.append(struct.pack("<IIII", ts_ns // 10**9, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def tshark(path: Path, fields: list[str]) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
    return [line.split("|") for line in res.stdout.splitlines()]


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


@needs_tshark
@pytest.mark.oracle
def test_erspan2_and_gre_key_as_tshark_decodes_them(tmp_path: Path) -> None:
    frames = batch([udp_frame(100, [(0x8100, 42)]), udp_frame(700), udp_frame(50)])
    e2 = Destination(name="e2", encap="erspan2", address="192.0.2.1", session_id=777, mtu=700)
    gre = Destination(name="g", encap="gre", address="192.0.2.1", key=0xDEADBEEF)
    gre_pcap(tmp_path / "e2.pcap", copies_of(e2, frames), 0)
    rows = tshark(tmp_path / "e2.pcap", ["gre.proto", "gre.sequence_number", "erspan.version", "erspan.spanid",
                                          "erspan.vlan", "erspan.encap", "erspan.truncated", "udp.dstport", "eth.src"])  # fmt: skip
    assert [r[0] for r in rows] == ["0x88be"] * 3
    assert [int(r[1]) for r in rows] == [0, 1, 2]
    assert {r[2] for r in rows} == {"1"} and {r[3] for r in rows} == {"777"}
    assert rows[0][4] == "42" and rows[0][5] == "3" and rows[1][4] == "0"  # tag kept in the frame: En 3
    assert [r[6] for r in rows] == ["0", "1", "0"]  # copy 2 cut by the 700-byte MTU
    assert rows[2][7] == "5000" and rows[2][8].split(",")[-1] == "02:aa:bb:cc:dd:01"
    gre_pcap(tmp_path / "g.pcap", copies_of(gre, frames), 0)
    rows = tshark(tmp_path / "g.pcap", ["gre.proto", "gre.key", "vlan.id", "udp.dstport"])
    assert [r[:2] for r in rows] == [["0x6558", "0xdeadbeef"]] * 3 and rows[0][2] == "42"


@needs_tshark
@pytest.mark.oracle
def test_erspan3_header_as_tshark_decodes_it(tmp_path: Path) -> None:
    frames = batch([udp_frame(100), udp_frame(100)])
    e3 = Destination(name="e3", encap="erspan3", address="192.0.2.1", session_id=1023)
    copies = copies_of(e3, frames, limit=60)
    gre_pcap(tmp_path / "e3.pcap", copies, 0)
    rows = tshark(tmp_path / "e3.pcap", ["gre.proto", "gre.sequence_number", "erspan.version", "erspan.spanid",
                                          "erspan.timestamp", "erspan.gra", "erspan.p", "erspan.ft",
                                          "erspan.truncated", "eth.src"])  # fmt: skip
    assert [r[0] for r in rows] == ["0x22eb"] * 2 and [r[1] for r in rows] == ["0", "1"]
    assert {r[2] for r in rows} == {"2"} and {r[3] for r in rows} == {"1023"}
    ts = int(frames.ts_ns[0]) // 100_000 & 0xFFFFFFFF  # 100 us units (Gra 0)
    assert int(rows[0][4]) == ts and rows[0][5] == "0" and rows[0][6] in ("1", "True") and rows[0][7] == "0"
    assert rows[0][8] == "1"  # the rule kept 60 of 142 bytes
    assert copies[0][20:] == bytes(frames.data[:60])
