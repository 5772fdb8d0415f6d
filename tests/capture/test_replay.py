"""Tests for ReplaySource: same frames as CaptureFile, pacing at a speed factor, EOFError at the end."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.capture.replay import ReplaySource
from cloudtap.capture.source import PacketSource
from cloudtap.errors import CaptureError, ConfigError

PCAPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"
T0 = 1_700_000_000


def write_pcap(path: Path, times_us: list[int], payload_len: int = 46) -> None:
    """A pcap of Ethernet frames whose first byte after the MACs numbers them, at ``times_us``."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, t in enumerate(times_us):
        frame = bytes(12) + struct.pack(">HI", 0x0800, i) + bytes(payload_len - 4)
        sec, usec = divmod(T0 * 1_000_000 + t, 1_000_000)
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame) + 4))
        out.append(frame)
    path.write_bytes(b"".join(out))


def collect(src: ReplaySource, timeout_s: float = 0.1) -> list:
    """Every batch until EOFError (None results skipped)."""
    out = []
    with pytest.raises(EOFError):
        for _ in range(100_000):
            batch = src.read(timeout_s)
            if batch is not None:
                out.append(batch)
    return out


def frame_ids(batches: list) -> np.ndarray:
    ids = []
    for b in batches:
        pos = b.offset + 14
        ids.append(
            (b.data[pos].astype(np.int64) << 24)
            | (b.data[pos + 1].astype(np.int64) << 16)
            | (b.data[pos + 2].astype(np.int64) << 8)
            | b.data[pos + 3]
        )
    return np.concatenate(ids) if ids else np.zeros(0, np.int64)


def test_max_speed_same_frames_as_capture_file(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    write_pcap(path, [i * 1000 for i in range(500)])
    with ReplaySource(path, batch_frames=128) as src:
        assert isinstance(src, PacketSource)
        batches = collect(src)
        stats = src.stats()
        with pytest.raises(EOFError):  # stays at EOF
            src.read()
    with CaptureFile(path) as cf:
        ref = list(cf.batches(128))
    assert [len(b) for b in batches] == [len(b) for b in ref]
    for got, want in zip(batches, ref, strict=True):
        for col in ("offset", "cap_len", "wire_len", "ts_ns", "linktype", "interface"):
            np.testing.assert_array_equal(getattr(got, col), getattr(want, col))
    np.testing.assert_array_equal(frame_ids(batches), np.arange(500))
    assert stats.packets == 500
    assert stats.bytes == 500 * 64


def test_real_capture_matches_capture_file(shared_pcaps: Path) -> None:
    path = shared_pcaps / "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"
    if not path.is_file():
        pytest.skip(f"{path.name} missing")
    with ReplaySource(path) as src:
        batches = collect(src)
    with CaptureFile(path) as cf:
        ref = list(cf.batches())
    assert sum(len(b) for b in batches) == sum(len(b) for b in ref) == 36
    got_ts = np.concatenate([b.ts_ns for b in batches])
    np.testing.assert_array_equal(got_ts, np.concatenate([b.ts_ns for b in ref]))
    for got, want in zip(batches, ref, strict=True):
        for i in range(len(got)):
            g = got.data[got.offset[i] : got.offset[i] + got.cap_len[i]]
            w = want.data[want.offset[i] : want.offset[i] + want.cap_len[i]]
            assert bytes(g) == bytes(w)


def test_speed_100_over_two_seconds_takes_about_20_ms(tmp_path: Path) -> None:
    path = tmp_path / "b.pcap"
    write_pcap(path, [i * 10_000 for i in range(201)])  # 2.0 s of capture time
    with ReplaySource(path, speed=100.0) as src:
        t0 = time.monotonic()
        batches = collect(src)
        elapsed = time.monotonic() - t0
    assert sum(len(b) for b in batches) == 201
    assert 0.018 <= elapsed < 0.2, elapsed
    assert len(batches) >= 2  # split into slices of <= 10 ms wall time, not one burst


def test_recorded_pace_spreads_batches(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    write_pcap(path, [0, 100_000, 200_000, 300_000])  # 0.3 s
    with ReplaySource(path, speed=1.0) as src:
        t0 = time.monotonic()
        arrivals = []
        with pytest.raises(EOFError):
            while True:
                b = src.read(0.05)
                if b is not None:
                    arrivals.append((time.monotonic() - t0, len(b)))
    assert [n for _, n in arrivals] == [1, 1, 1, 1]
    for (t, _), due in zip(arrivals, [0.0, 0.1, 0.2, 0.3], strict=True):
        assert due - 0.005 <= t < due + 0.08


def test_paced_read_respects_timeout(tmp_path: Path) -> None:
    path = tmp_path / "d.pcap"
    write_pcap(path, [0, 5_000_000])  # second frame due 5 s later
    with ReplaySource(path, speed=1.0) as src:
        assert len(src.read(0.05)) == 1
        t0 = time.monotonic()
        assert src.read(0.05) is None
        assert time.monotonic() - t0 < 0.5


def test_timestamps_going_backwards_do_not_stall(tmp_path: Path) -> None:
    path = tmp_path / "e.pcap"
    write_pcap(path, [0, 200_000, 100_000, 150_000, 210_000])
    with ReplaySource(path, speed=1.0) as src:
        t0 = time.monotonic()
        batches = collect(src)
        elapsed = time.monotonic() - t0
    np.testing.assert_array_equal(frame_ids(batches), np.arange(5))
    assert 0.2 <= elapsed < 0.4


def test_invalid_arguments_and_close(tmp_path: Path) -> None:
    path = tmp_path / "f.pcap"
    write_pcap(path, [0, 1])
    for speed in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError):
            ReplaySource(path, speed=speed)
    with pytest.raises(CaptureError):
        ReplaySource(tmp_path / "missing.pcap")
    src = ReplaySource(path)
    batch = src.read()
    src.close()
    src.close()  # idempotent
    assert len(batch) == 2 and bytes(batch.data[batch.offset[0] : batch.offset[0] + 6]) == bytes(6)
    with pytest.raises(CaptureError):
        src.read()
