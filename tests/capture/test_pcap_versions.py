"""pcap file headers other than plain 2.4 that Wireshark reads, checked against tshark.

Old versions (2.0-2.2) wrote the wire length before the captured length, 2.3 files exist both
ways, AIX tcpdump (2.2) wrote ifType link types and nanoseconds, and the Kuznetzov (0xa1b2cd34)
and nanosecond (0xa1b23c4d) magics change the record header and the time unit.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.errors import CaptureError

FRAME = bytes.fromhex(
    "020000000002020000000001080045000028000100004006f97c0a0000010a000002"
    "9c400050000000000000000050022000e0e60000"
)


def pcap(
    version: tuple[int, int],
    swapped: bool,
    magic: int = 0xA1B2C3D4,
    linktype: int = 1,
    big_endian: bool = False,
    frac: int = 250_000,
) -> bytes:
    """One file with two records (wire length 10 bytes longer than captured)."""
    e = ">" if big_endian else "<"
    out = [struct.pack(e + "IHHiIII", magic, *version, 0, 0, 65535, linktype)]
    extra = b"\x00" * 8 if magic == 0xA1B2CD34 else b""  # ifindex, protocol, pkt_type, pad
    for i in range(2):
        cap, wire = len(FRAME), len(FRAME) + 10 * (i + 1)
        a, b = (wire, cap) if swapped else (cap, wire)
        out.append(struct.pack(e + "IIII", 1_700_000_000 + i, frac, a, b) + extra + FRAME)
    return b"".join(out)


def ours(path: Path) -> list[tuple[int, int, int, int]]:
    with CaptureFile(path) as cf:
        rows = []
        for b in cf.batches():
            rows += [
                (int(w), int(c), int(t), int(lt))
                for w, c, t, lt in zip(b.wire_len, b.cap_len, b.ts_ns, b.linktype, strict=True)
            ]
        return rows


def tshark(path: Path) -> list[tuple[int, int, int]] | None:
    """(frame.len, frame.cap_len, ns) per frame, or None when tshark refuses the file."""
    cmd = ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len"]
    run = subprocess.run([*cmd, "-e", "frame.time_epoch"], capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        return None
    rows = []
    for line in run.stdout.splitlines():
        wire, cap, epoch = line.split("\t")
        rows.append((int(wire), int(cap), int(Decimal(epoch) * 1_000_000_000)))
    return rows


CASES = {
    "2.0 swapped": dict(version=(2, 0), swapped=True),
    "2.1 swapped": dict(version=(2, 1), swapped=True),
    "2.2 swapped": dict(version=(2, 2), swapped=True),
    "2.3 swapped": dict(version=(2, 3), swapped=True),
    "2.3 normal": dict(version=(2, 3), swapped=False),
    "2.5 normal": dict(version=(2, 5), swapped=False),
    "3.0 normal": dict(version=(3, 0), swapped=False),
    "543.0 swapped": dict(version=(543, 0), swapped=True),
    "2.4 big-endian": dict(version=(2, 4), swapped=False, big_endian=True),
    "2.2 big-endian swapped": dict(version=(2, 2), swapped=True, big_endian=True),
    "nanosecond magic": dict(version=(2, 4), swapped=False, magic=0xA1B23C4D, frac=250_000_123),
    "Kuznetzov magic": dict(version=(2, 4), swapped=False, magic=0xA1B2CD34),
    "AIX 2.2 ifType 6": dict(version=(2, 2), swapped=True, linktype=6, frac=250_000_123),
}


@pytest.mark.oracle
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_header_variants_read_like_tshark(tmp_path, name):
    path = tmp_path / "v.pcap"
    path.write_bytes(pcap(**CASES[name]))
    want = tshark(path)
    assert want is not None, "tshark refuses the file"
    got = ours(path)
    assert [g[:3] for g in got] == want
    assert {g[3] for g in got} == {1}  # AIX's ifType 6 is Ethernet


@pytest.mark.parametrize(
    ("version", "swapped"), [((2, 2), False), ((2, 5), True)], ids=["2.2 not swapped", "2.5 swapped"]
)
def test_lengths_in_the_wrong_order_are_a_corrupt_capture(tmp_path, version, swapped):
    """Neither tshark nor cloudtap guesses: a captured length beyond the record is damage."""
    path = tmp_path / "bad.pcap"
    path.write_bytes(pcap(version, swapped))
    with pytest.raises(CaptureError, match="corrupt at byte offset"):
        ours(path)
    if shutil.which("tshark"):
        assert tshark(path) in (None, [])


def test_major_version_1_is_refused(tmp_path):
    path = tmp_path / "v1.pcap"
    path.write_bytes(pcap((1, 0), False))
    with pytest.raises(CaptureError, match=r"unsupported pcap version 1\.0"):
        CaptureFile(path)
