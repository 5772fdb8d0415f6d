"""Spool: FIFO order, bounds and both policies, restart recovery, half-written and damaged files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from cloudtap.errors import ConfigError
from cloudtap.ship.spool import Spool, SpoolFull


def open_spool(path: Path, max_bytes: int = 10_000, policy: str = "drop_oldest", **kw: object) -> Spool:
    return Spool(path, max_bytes, policy=policy, first_seq=1, **kw)  # type: ignore[arg-type]


def drain(spool: Spool) -> list[tuple[int, bytes]]:
    out = []
    while (item := spool.peek()) is not None:
        out.append(item)
        spool.ack(item[0])
    return out


def test_fifo_append_peek_ack(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        seqs = [spool.append(f"batch-{i}".encode()) for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert spool.pending_batches == 5 and spool.pending_bytes == sum(len(f"batch-{i}") for i in range(5))
        assert spool.peek() == (1, b"batch-0")
        assert spool.peek() == (1, b"batch-0")  # peek does not consume
        spool.ack(1)
        spool.ack(1)  # acking twice is harmless
        spool.ack(99)  # unknown seq ignored
        assert [s for s, _ in drain(spool)] == [2, 3, 4, 5]
        assert spool.peek() is None and spool.pending_bytes == 0
        assert sorted(p.name for p in tmp_path.glob("*.batch")) == []


def test_append_callable_gets_its_seq(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append(b"x")
        seq = spool.append(lambda s: f"I am {s}".encode())
        assert spool.peek() == (1, b"x")
        spool.ack(1)
        assert spool.peek() == (seq, f"I am {seq}".encode()) and seq == 2


def test_drop_oldest_counts_what_it_drops(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=300) as spool:
        for i in range(10):
            spool.append(bytes([i]) * 100)
        assert spool.pending_batches == 3 and spool.pending_bytes == 300
        assert spool.dropped_batches == 7 and spool.dropped_bytes == 700
        assert [data[0] for _, data in drain(spool)] == [7, 8, 9]  # the newest survive
        with pytest.raises(SpoolFull, match="exceeds the spool bound"):
            spool.append(b"x" * 301)


def test_block_waits_for_ack_then_times_out(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=200, policy="block") as spool:
        spool.append(b"a" * 100)
        spool.append(b"b" * 100)
        started = time.monotonic()
        with pytest.raises(SpoolFull, match="spool full"):
            spool.append(b"c" * 100, timeout_s=0.2)
        assert time.monotonic() - started >= 0.2
        timer = threading.Timer(0.2, lambda: spool.ack(1))
        timer.start()
        seq = spool.append(b"c" * 100, timeout_s=5)  # unblocked by the ack
        timer.join()
        assert spool.dropped_batches == 0
        assert [s for s, _ in drain(spool)] == [2, seq]


def test_restart_recovers_pending_and_counter(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(4):
        spool.append(f"b{i}".encode())
    spool.ack(1)
    spool.close()
    with open_spool(tmp_path) as again:  # first_seq is ignored: the spool has history
        assert again.pending_batches == 3
        assert again.next_seq == 5
        assert [d for _, d in drain(again)] == [b"b1", b"b2", b"b3"]
    with open_spool(tmp_path) as third:  # empty now, but sequence numbers are never reused
        assert third.append(b"next") == 5


def test_fresh_spool_starts_at_wall_clock(tmp_path: Path) -> None:
    """A wiped spool must not restart at 0: the server would take its batches for replays."""
    before = time.time_ns() // 1000
    with Spool(tmp_path / "a", 1000) as spool:
        assert spool.append(b"x") >= before


def test_half_written_and_damaged_files_are_quarantined(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(3):
        spool.append(f"payload-{i}".encode())
    spool.close()
    # A crash during append leaves a .part file; a torn write leaves a short .batch file.
    (tmp_path / ".00000000000000000004.part").write_bytes(b"half a batch")
    torn = tmp_path / f"{2:020d}.batch"
    torn.write_bytes(torn.read_bytes()[:-5])
    with open_spool(tmp_path) as again:
        assert again.quarantined_files == 2
        assert again.next_seq == 5  # the .part's seq is not reused either
        assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == [
            ".00000000000000000004.part",
            f"{2:020d}.batch",
        ]
        # A bit flip inside a complete file is caught by the CRC on read.
        flipped = tmp_path / f"{3:020d}.batch"
        raw = bytearray(flipped.read_bytes())
        raw[2] ^= 0x10
        flipped.write_bytes(bytes(raw))
        assert drain(again) == [(1, b"payload-0")]
        assert again.quarantined_files == 3


def test_smaller_bound_at_restart_drops_oldest(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=1000)
    for i in range(5):
        spool.append(bytes([i]) * 100)
    spool.close()
    with open_spool(tmp_path, max_bytes=250) as again:
        assert again.pending_batches == 2 and again.dropped_batches == 3
        assert [d[0] for _, d in drain(again)] == [3, 4]


def test_one_spool_per_directory(tmp_path: Path) -> None:
    with open_spool(tmp_path):
        with pytest.raises(ConfigError, match="in use"):
            open_spool(tmp_path)
    with pytest.raises(ConfigError, match="unknown spool policy"):
        Spool(tmp_path / "x", 10, policy="lossy")


def test_files_are_complete_on_disk(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append(b"z" * 1000)
        names = os.listdir(tmp_path)
        assert f"{1:020d}.batch" in names and not [n for n in names if n.endswith(".part")]
        assert (tmp_path / "next_seq").read_text().strip() == "2"
