"""Tests for CaptureFile: synthetic pcap/pcapng files built with struct, plus the real capture corpus."""

from __future__ import annotations

import csv
import shutil
import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudtap.capture import _pcap_kernels as K
from cloudtap.capture.pcap_file import CaptureFile, open_capture
from cloudtap.errors import CaptureError, CorruptCaptureError

PCAPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"
NS = 1_000_000_000

# ---------------------------------------------------------------------------------------------
# tiny writers


def pcap_bytes(
    records: list[tuple[int, int, bytes, int]],
    *,
    nano: bool = False,
    be: bool = False,
    modified: bool = False,
    linktype: int = 1,
    snaplen: int = 65535,
    version: tuple[int, int] = (2, 4),
) -> bytes:
    """A classic pcap file; records are (sec, subsec, data, wire_len)."""
    e = ">" if be else "<"
    magic = 0xA1B2CD34 if modified else (0xA1B23C4D if nano else 0xA1B2C3D4)
    out = [struct.pack(e + "IHHiIII", magic, *version, 0, 0, snaplen, linktype)]
    for sec, sub, data, wire in records:
        out.append(struct.pack(e + "IIII", sec, sub, len(data), wire))
        if modified:
            out.append(struct.pack(e + "IHBB", 7, 0x0800, 0, 0))
        out.append(data)
    return b"".join(out)


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def block(btype: int, body: bytes, be: bool = False) -> bytes:
    """A pcapng block with correct leading/trailing total lengths."""
    e = ">" if be else "<"
    body = _pad(body)
    total = 12 + len(body)
    return struct.pack(e + "II", btype, total) + body + struct.pack(e + "I", total)


def shb(be: bool = False, version: tuple[int, int] = (1, 0)) -> bytes:
    e = ">" if be else "<"
    body = struct.pack(e + "IHHq", 0x1A2B3C4D, *version, -1) + struct.pack(e + "HH", 0, 0)
    return block(0x0A0D0D0A, body, be)


def opt(code: int, value: bytes, be: bool = False) -> bytes:
    return struct.pack((">" if be else "<") + "HH", code, len(value)) + _pad(value)


def idb(linktype: int, snaplen: int = 0, opts: bytes = b"", be: bool = False) -> bytes:
    e = ">" if be else "<"
    end = struct.pack(e + "HH", 0, 0) if opts else b""
    return block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts + end, be)


def epb(iface: int, ts: int, data: bytes, wire: int | None = None, be: bool = False) -> bytes:
    e = ">" if be else "<"
    wire = len(data) if wire is None else wire
    head = struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), wire)
    return block(6, head + _pad(data), be)


def spb(data: bytes, wire: int | None = None, be: bool = False) -> bytes:
    wire = len(data) if wire is None else wire
    return block(3, struct.pack((">" if be else "<") + "I", wire) + _pad(data), be)


def pb(iface: int, ts: int, data: bytes, be: bool = False) -> bytes:
    e = ">" if be else "<"
    head = struct.pack(e + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(2, head + _pad(data), be)


def write(tmp_path: Path, content: bytes, name: str = "f.pcap") -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def read_all(path: Path, max_frames: int = 65536) -> dict[str, np.ndarray]:
    """Concatenate every batch; also return the frame bytes."""
    with CaptureFile(path) as f:
        batches = list(f.batches(max_frames))
    return _concat(batches)


def _concat(batches: list) -> dict[str, np.ndarray]:
    cols = ("offset", "cap_len", "wire_len", "ts_ns", "linktype", "interface")
    out = {c: np.concatenate([getattr(b, c) for b in batches]) if batches else np.zeros(0) for c in cols}
    out["frames"] = [
        bytes(b.data[o : o + c]) for b in batches for o, c in zip(b.offset, b.cap_len, strict=True)
    ]
    return out


def read_until_error(path: Path, max_frames: int = 65536) -> tuple[list, CorruptCaptureError]:
    batches = []
    with CaptureFile(path) as f, pytest.raises(CorruptCaptureError) as ei:
        for b in f.batches(max_frames):
            batches.append(b)
    return batches, ei.value


def frame(i: int, n: int = 60) -> bytes:
    return bytes((i + j) & 0xFF for j in range(n))


# ---------------------------------------------------------------------------------------------
# classic pcap


@pytest.mark.parametrize("be", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_endianness_and_resolution(tmp_path: Path, be: bool, nano: bool) -> None:
    sub = [123_456_789, 5, 999_999_999] if nano else [123_456, 5, 999_999]
    recs = [(1_700_000_000 + i, sub[i], frame(i, 40 + i), 100 + i) for i in range(3)]
    p = write(tmp_path, pcap_bytes(recs, nano=nano, be=be, linktype=101))
    with CaptureFile(p) as f:
        assert f.format == "pcap" and f.size == p.stat().st_size and f.linktypes == {0: 101}
        got = _concat(list(f.batches()))
        assert f.bytes_read == f.size and f.frames_read == 3
    mult = 1 if nano else 1000
    assert got["ts_ns"].tolist() == [(1_700_000_000 + i) * NS + sub[i] * mult for i in range(3)]
    assert got["cap_len"].tolist() == [40, 41, 42]
    assert got["wire_len"].tolist() == [100, 101, 102]
    assert got["linktype"].tolist() == [101] * 3 and got["interface"].tolist() == [0] * 3
    assert got["frames"] == [r[2] for r in recs]
    assert got["offset"][0] == 24 + 16


@pytest.mark.parametrize("be", [False, True])
def test_modified_pcap_has_24_byte_record_headers(tmp_path: Path, be: bool) -> None:
    recs = [(10 + i, 250 * i, frame(i, 30 + 7 * i), 500) for i in range(4)]
    got = read_all(write(tmp_path, pcap_bytes(recs, modified=True, be=be)))
    assert got["frames"] == [r[2] for r in recs]
    assert got["ts_ns"].tolist() == [(10 + i) * NS + 250_000 * i for i in range(4)]
    assert got["offset"][0] == 24 + 24


def test_pcap_linktype_fcs_bits_are_masked_and_reserved_bits_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, pcap_bytes([(1, 0, b"ab", 2)], linktype=0x30000001))
    with CaptureFile(p) as f:
        assert f.linktypes == {0: 1}
        assert next(iter(f.batches())).linktype.tolist() == [1]
    bad = write(tmp_path, pcap_bytes([], linktype=0x00300001), "r.pcap")
    with pytest.raises(CaptureError, match=r"r\.pcap.*reserved bits"):
        CaptureFile(bad)


def test_pcap_unsupported_version_is_a_clear_error(tmp_path: Path) -> None:
    p = write(tmp_path, pcap_bytes([(1, 0, b"ab", 2)], version=(1, 0)), "old.pcap")
    with pytest.raises(CaptureError, match=r"old\.pcap: unsupported pcap version 1\.0"):
        CaptureFile(p)


def test_pcap_caplen_above_snaplen_is_accepted_but_absurd_caplen_is_corrupt(tmp_path: Path) -> None:
    ok = read_all(write(tmp_path, pcap_bytes([(1, 0, frame(1, 80), 80)], snaplen=64)))
    assert ok["cap_len"].tolist() == [80]  # real files (zeek trunc-hdr, smb2_krb) do this; tshark accepts
    good = pcap_bytes([(1, 0, frame(1), 60)])
    absurd = good + struct.pack("<IIII", 2, 0, 1 << 20, 1 << 20) + b"\0" * 64
    batches, err = read_until_error(write(tmp_path, absurd, "absurd.pcap"))
    assert sum(len(b) for b in batches) == 1
    assert err.offset == len(good) and "captured length" in err.reason


@pytest.mark.parametrize("cut", [1, 10, 16, 17, 50])
def test_pcap_truncated_mid_record_yields_good_frames_then_errors_at_record(tmp_path: Path, cut: int) -> None:
    recs = [(100 + i, i, frame(i), 60) for i in range(5)]
    full = pcap_bytes(recs)
    last_off = len(full) - (16 + 60)
    p = write(tmp_path, full[: last_off + cut], "cut.pcap")
    batches, err = read_until_error(p, max_frames=2)
    got = _concat(batches)
    assert got["frames"] == [r[2] for r in recs[:4]]
    assert err.offset == last_off and err.path == str(p) and "truncated" in err.reason
    assert str(p) in str(err) and str(last_off) in str(err)


def test_header_only_files_have_zero_frames(tmp_path: Path) -> None:
    for name, content in (("h.pcap", pcap_bytes([])), ("h.pcapng", shb() + idb(1))):
        with CaptureFile(write(tmp_path, content, name)) as f:
            assert list(f.batches()) == [] and f.frames_read == 0


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "empty file"),
        (b"\x00\x01", "not a pcap or pcapng"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4, "not a pcap or pcapng"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "pcap file header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00", "Section Header Block"),
        (b"\x0a\x0d\x0d\x0a" + b"\x1c\x00\x00\x00" + b"XXXX" + b"\0" * 16, "byte-order magic"),
    ],
)
def test_garbage_and_tiny_files_raise_capture_error_naming_file(
    tmp_path: Path, content: bytes, pattern: str
) -> None:
    p = write(tmp_path, content, "junk.pcap")
    with pytest.raises(CaptureError, match=pattern) as ei:
        open_capture(p)
    assert str(p) in str(ei.value)


def test_missing_file_and_closed_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="nope.pcap"):
        CaptureFile(tmp_path / "nope.pcap")
    f = CaptureFile(write(tmp_path, pcap_bytes([(1, 0, b"abcd", 4)])))
    batch = next(iter(f.batches()))
    f.close()  # a live batch still views the map: close must not fail
    assert bytes(batch.data[batch.offset[0] : batch.offset[0] + 4]) == b"abcd"
    with pytest.raises(CaptureError, match="closed"):
        f.batches()


def test_batches_respect_max_frames_and_data_is_readonly_file_view(tmp_path: Path) -> None:
    recs = [(1, i, frame(i, 20 + i % 9), 99) for i in range(23)]
    p = write(tmp_path, pcap_bytes(recs))
    with CaptureFile(p) as f:
        batches = list(f.batches(max_frames=5))
        assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
        assert all(b.data.base is not None and not b.data.flags.writeable for b in batches)
        assert batches[0].data.shape[0] == f.size
        with pytest.raises(ValueError):
            f.batches(max_frames=0)
    assert _concat(batches)["frames"] == [r[2] for r in recs]


def test_format_detected_by_magic_not_extension(tmp_path: Path) -> None:
    p = write(tmp_path, shb() + idb(1) + epb(0, 5, b"xyz"), "looks_like.pcap")
    with CaptureFile(p) as f:
        assert f.format == "pcapng"
        assert len(next(iter(f.batches()))) == 1


# ---------------------------------------------------------------------------------------------
# pcapng


def test_pcapng_two_interfaces_linktypes_and_tsresol(tmp_path: Path) -> None:
    res_ns = opt(9, bytes([9]))
    res_pow2 = opt(9, bytes([0x80 | 20])) + opt(14, struct.pack("<q", 100))  # 2^-20 s units, +100 s offset
    content = (
        shb()
        + idb(1, 65535, res_ns)
        + idb(113, 0, res_pow2)
        + epb(0, 1_700_000_000_123_456_789, frame(0))
        + epb(1, (1_600_000_000 << 20) + 3, frame(1, 44), wire=1500)
        + epb(0, 1, frame(2, 14))
    )
    p = write(tmp_path, content, "two.pcapng")
    with CaptureFile(p) as f:
        assert f.linktypes == {0: 1, 1: 113}  # known from the leading IDBs before any read
        got = _concat(list(f.batches()))
        assert f.linktypes == {0: 1, 1: 113}
    assert got["ts_ns"].tolist() == [
        1_700_000_000_123_456_789,
        (1_600_000_000 + 100) * NS + (3 * NS >> 20),
        1,
    ]
    assert got["linktype"].tolist() == [1, 113, 1]
    assert got["interface"].tolist() == [0, 1, 0]
    assert got["cap_len"].tolist() == [60, 44, 14] and got["wire_len"].tolist() == [60, 1500, 14]
    assert got["frames"] == [frame(0), frame(1, 44), frame(2, 14)]


def test_pcapng_default_resolution_is_microseconds_and_big_endian_sections(tmp_path: Path) -> None:
    content = (
        shb(be=True)
        + idb(1, be=True)
        + epb(0, 1_000_001, frame(0), be=True)
        + shb(be=False)  # a second section, other byte order; its interfaces continue the numbering
        + idb(228)
        + idb(101, opts=opt(9, bytes([3])))
        + epb(1, 42, frame(1))
        + epb(0, 7, frame(2))
    )
    got = read_all(write(tmp_path, content, "multi.pcapng"))
    assert got["ts_ns"].tolist() == [1_000_001_000, 42_000_000, 7_000]
    assert got["interface"].tolist() == [0, 2, 1]
    assert got["linktype"].tolist() == [1, 101, 228]


def test_pcapng_spb_pb_and_skipped_blocks(tmp_path: Path) -> None:
    content = (
        shb()
        + block(4, b"\x01\x00\x04\x00\x0a\x00\x00\x01host\0\0\0\0")  # NRB
        + idb(1, 50)
        + spb(frame(0, 80))  # caplen = min(orig_len, snaplen) = 50; the block carries all 80 bytes
        + block(5, struct.pack("<III", 0, 0, 0))  # ISB
        + block(10, b"TLSK\0\0\0\0")  # DSB
        + block(0x00000BAD, struct.pack("<I", 32473) + b"vendor")  # custom
        + block(0x40000BAD, struct.pack("<I", 32473) + b"x")  # custom, not to copy
        + block(0x1234, b"who knows")  # unknown
        + pb(0, 2_000_000, frame(1, 33))
        + spb(frame(2, 20), wire=20)
    )
    got = read_all(write(tmp_path, content, "mix.pcapng"))
    assert got["cap_len"].tolist() == [50, 33, 20] and got["wire_len"].tolist() == [80, 33, 20]
    assert got["ts_ns"].tolist() == [0, 2_000_000_000, 0]  # SPBs carry no timestamp
    assert got["frames"] == [frame(0, 50), frame(1, 33), frame(2, 20)]


def test_pcapng_batches_split_across_interface_blocks(tmp_path: Path) -> None:
    parts = [shb()]
    for i in range(7):
        parts.append(idb(1 + i))
        parts += [epb(i, 1000 * i + j, frame(j, 10 + j)) for j in range(3)]
    p = write(tmp_path, b"".join(parts), "split.pcapng")
    whole = read_all(p)
    for m in (1, 2, 4, 100):
        with CaptureFile(p) as f:
            batches = list(f.batches(max_frames=m))
        assert all(len(b) <= m for b in batches)
        got = _concat(batches)
        for col in ("offset", "ts_ns", "linktype", "interface", "cap_len"):
            assert got[col].tolist() == whole[col].tolist()
    assert whole["interface"].tolist() == [i for i in range(7) for _ in range(3)]
    assert whole["linktype"].tolist() == [1 + i for i in range(7) for _ in range(3)]


def test_pcapng_unsupported_version_is_a_clear_error(tmp_path: Path) -> None:
    p = write(tmp_path, shb(version=(2, 0)) + idb(1), "v2.pcapng")
    with pytest.raises(CaptureError, match=r"v2\.pcapng: unsupported pcapng version 2\.0"):
        CaptureFile(p)
    ok = write(tmp_path, shb(version=(1, 2)) + idb(1) + epb(0, 1, b"a"), "v12.pcapng")
    assert len(read_all(ok)["ts_ns"]) == 1


def _corrupt_cases() -> list[tuple[str, bytes, str]]:
    """(name, damaged bytes placed after three good EPBs, expected reason)."""
    bad_trailer = bytearray(epb(0, 1, frame(9)))
    bad_trailer[-4:] = struct.pack("<I", 999)
    not_mult4 = bytearray(epb(0, 1, frame(9)))
    not_mult4[4:8] = struct.pack("<I", len(not_mult4) - 2)
    caplen_too_big = bytearray(epb(0, 1, frame(9)))
    caplen_too_big[20:24] = struct.pack("<I", 400)
    return [
        ("trailer", bytes(bad_trailer), "trailing block total length"),
        ("mult4", bytes(not_mult4), "multiple of 4"),
        ("iface", epb(5, 1, frame(9)), "interface"),
        ("caplen", bytes(caplen_too_big), "longer than its block"),
        ("idb", idb(1)[:-4] + b"\0\0\0\0", "Interface Description Block"),
        ("truncated", epb(0, 1, frame(9))[:-10], "past the end"),  # the file ends here
        ("header", b"\x06\x00\x00\x00\x40", "record header"),  # the file ends here
    ]


@pytest.mark.parametrize(("name", "damage", "reason"), _corrupt_cases(), ids=[c[0] for c in _corrupt_cases()])
def test_pcapng_corruption_reports_offset_after_good_frames(
    tmp_path: Path, name: str, damage: bytes, reason: str
) -> None:
    good = shb() + idb(1) + b"".join(epb(0, i, frame(i)) for i in range(3))
    tail = b"" if name in ("truncated", "header") else epb(0, 9, frame(9))
    p = write(tmp_path, good + damage + tail, f"{name}.pcapng")
    batches, err = read_until_error(p, max_frames=2)
    assert _concat(batches)["frames"] == [frame(i) for i in range(3)]
    assert err.offset == len(good) and reason in err.reason and str(p) in str(err)


# ---------------------------------------------------------------------------------------------
# timestamp conversion and robustness


def test_ts_units_to_ns_is_exact_floor() -> None:
    rng = np.random.default_rng(7)
    values = [0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1] + [int(v) for v in rng.integers(0, 2**63, 40)]
    for res in list(range(0, 20)) + [0x80 | k for k in (0, 1, 10, 20, 30, 32, 33, 40, 63, 64, 80, 127)]:
        units = 2 ** (res & 0x7F) if res & 0x80 else 10**res
        for v in values:
            want = int(Fraction(v * NS, units).__floor__())
            if want >= 2**63:
                continue  # beyond int64 ns (year 2262)
            assert K.ts_units_to_ns(np.uint64(v), res) == want, (v, res)


def _valid_pcapng() -> bytes:
    return (
        shb()
        + idb(1, 128, opt(9, bytes([9])))
        + b"".join(epb(0, i, frame(i, 20 + i)) for i in range(4))
        + spb(frame(7, 30))
        + idb(105)
        + epb(1, 5, frame(5))
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["pcap", "pcapng"]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
)
def test_damaged_files_only_raise_capture_errors(tmp_path: Path, kind: str, edits: list, cut: int) -> None:
    recs = [(i, i, frame(i, 30 + i), 99) for i in range(6)]
    buf = bytearray(_valid_pcapng() if kind == "pcapng" else pcap_bytes(recs))
    for pos, val in edits:
        buf[pos % len(buf)] = val
    p = write(tmp_path, bytes(buf[: max(1, cut % (len(buf) + 1))]), "fuzz.bin")
    try:
        with CaptureFile(p) as f:
            n = sum(len(b) for b in f.batches(max_frames=3))
            assert n == f.frames_read and f.bytes_read <= f.size
    except CaptureError as exc:
        assert str(p) in str(exc)


# ---------------------------------------------------------------------------------------------
# sequential pre-read ahead of the record walk


def _scan_pcap_all(data: np.ndarray, max_frames: int) -> tuple[list[int], list[tuple[int, int]], np.ndarray]:
    """Walk a little-endian µs pcap with ``K.scan_pcap``: frame offsets, (pos, pre-read front) per call, state."""
    pos, end = 24, data.shape[0]
    stream = np.array([pos, 0], np.int64)
    cols = (np.int64, np.uint32, np.uint32, np.int64)
    arrays = tuple(np.empty(max_frames, t) for t in cols)
    offsets: list[int] = []
    fronts: list[tuple[int, int]] = []
    while pos < end:
        n, pos, status = K.scan_pcap(data, pos, end, False, 16, 1000, 1 << 22, stream, *arrays)
        assert status >= 0
        offsets += arrays[0][:n].tolist()
        fronts.append((pos, int(stream[0])))
    return offsets, fronts, stream


def test_walk_pre_reads_every_line_ahead_and_never_past_the_end() -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(40, 1500, 3000)
    recs = [(1, i, rng.bytes(int(c)), int(c)) for i, c in enumerate(sizes)]
    data = np.frombuffer(pcap_bytes(recs), np.uint8)
    want = (24 + np.cumsum(16 + sizes) - sizes).tolist()
    for max_frames in (1, 97, 4096):
        offsets, fronts, stream = _scan_pcap_all(data, max_frames)
        assert offsets == want
        # the pre-read stays ahead of the walk, by a bounded lead
        assert all(pos <= front <= pos + K.PREREAD_AHEAD + K.PREREAD_BLOCK for pos, front in fronts)
        # it reached the end of the data, not beyond, reading one byte of every 64 from the start
        assert stream[0] == data.shape[0]
        assert stream[1] == int(data[24::64].sum(dtype=np.int64))


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_records_larger_than_the_pre_read_lead(tmp_path: Path, kind: str) -> None:
    big = K.PREREAD_AHEAD + K.PREREAD_BLOCK + 4321  # jumps past the pre-read front
    lens = [60, big, 7, 0, big * 2, 1500, 33] + [100] * 50 + [big]
    frames = [bytes([i & 0xFF]) * n for i, n in enumerate(lens)]
    if kind == "pcap":
        content = pcap_bytes([(1, i, f, len(f)) for i, f in enumerate(frames)], snaplen=1 << 20)
    else:
        content = shb() + idb(1, 1 << 20) + b"".join(epb(0, i, f) for i, f in enumerate(frames))
    p = write(tmp_path, content, f"big.{kind}")
    for max_frames in (1, 3, 65536):
        got = read_all(p, max_frames)
        assert got["frames"] == frames
        assert got["cap_len"].tolist() == lens


# ---------------------------------------------------------------------------------------------
# real captures


def _manifest() -> list[dict[str, str]]:
    if not (PCAPS / "MANIFEST.csv").is_file():
        return []
    with open(PCAPS / "MANIFEST.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["format"] in ("pcap", "pcapng")]


MANIFEST = _manifest()
GOOD = [r for r in MANIFEST if not r["capinfos_error"]]
BROKEN = [r for r in MANIFEST if r["capinfos_error"]]


def _tshark_sample(rows: list[dict[str, str]], n: int = 40) -> list[dict[str, str]]:
    """Every unusual file (pcapng, ns, big-endian, odd linktype) first, then an even spread of the rest."""
    odd = [
        r
        for r in rows
        if r["format"] != "pcap" or r["ts_res"] != "us" or r["endian"] != "LE" or r["linktype"] != "1"
    ]
    rest = [r for r in rows if r not in odd and int(r["bytes"]) < 1_000_000]
    step = max(1, len(rest) // max(1, n - len(odd)))
    return (odd + rest[::step])[:n]


def _ids(rows: list[dict[str, str]]) -> list[str]:
    return [r["path"] for r in rows]


needs_corpus = pytest.mark.skipif(not MANIFEST, reason="shared capture corpus not present")


@needs_corpus
def test_frame_counts_match_manifest_for_every_good_file() -> None:
    wrong = []
    for r in GOOD:
        with CaptureFile(PCAPS / r["path"]) as f:
            n = sum(len(b) for b in f.batches())
            if n != int(r["packets"]) or f.format != r["format"] or f.bytes_read != f.size:
                wrong.append((r["path"], n, r["packets"]))
    assert not wrong
    assert len(GOOD) > 200


@needs_corpus
@pytest.mark.timeout(30)
@pytest.mark.parametrize("row", BROKEN, ids=_ids(BROKEN))
def test_broken_corpus_files_fail_cleanly(row: dict[str, str]) -> None:
    path = PCAPS / row["path"]
    try:
        with CaptureFile(path) as f:
            n = sum(len(b) for b in f.batches())
            assert n == f.frames_read and f.bytes_read == f.size  # damage only in a skipped part
    except CaptureError as exc:
        assert str(path) in str(exc)


def _tshark_frames(path: Path) -> list[list[str]]:
    fields = ["frame.time_epoch", "frame.cap_len", "frame.len", "frame.interface_id"]
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields"] + [a for f in fields for a in ("-e", f)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("\t") for line in out.splitlines()]


def _tshark_ns(epoch: str) -> int | None:
    """tshark's ``secs.nsecs`` as exact int ns; None where tshark itself is wrong or beyond int64."""
    secs, _, nsecs = epoch.partition(".")
    if secs.startswith("-"):
        return None  # wireshark's signed overflow of an invalid nsec field (timestamp_invalid_nano.pcap)
    value = int(secs) * NS + int(nsecs or 0)  # nsecs may exceed 9 digits for invalid fields: normalise
    return value if value < 2**63 else None


@needs_corpus
@pytest.mark.oracle
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("row", _tshark_sample(GOOD), ids=_ids(_tshark_sample(GOOD)))
def test_frames_match_tshark(row: dict[str, str]) -> None:
    path = PCAPS / row["path"]
    want = _tshark_frames(path)
    got = read_all(path)
    assert len(want) == len(got["ts_ns"]) == int(row["packets"])
    for i, (epoch, cap, wire, iface) in enumerate(want):
        ns = _tshark_ns(epoch)
        if ns is not None:
            assert got["ts_ns"][i] == ns, (i, epoch)
        assert (got["cap_len"][i], got["wire_len"][i]) == (int(cap), int(wire)), i
        if iface:
            assert got["interface"][i] == int(iface), i
