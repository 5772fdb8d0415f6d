"""Packet-store segments: the ``seg-NNNNNNNN.ctpk`` files of blocks, their ``.idx`` files, and the index.

Blocks are appended to the current segment and their index records to its ``.idx`` file; a segment
is rotated beyond a size, and the oldest is deleted while the files exceed the disk budget. The index
(``INDEX_DTYPE`` records of every block on disk, oldest first) is reloaded from the ``.idx`` files at
start.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cloudtap.agent.packet_blocks import INDEX_DTYPE

if TYPE_CHECKING:
    from cloudtap.agent.packet_store import PacketStoreStats


@dataclasses.dataclass
class Segment:
    """One segment file and its index file, with their sizes."""

    seq: int
    path: Path
    index_path: Path
    size: int = 0
    index_size: int = 0


def segment_paths(directory: Path, seq: int) -> tuple[Path, Path]:
    """``(blocks file, index file)`` of segment ``seq``."""
    return directory / f"seg-{seq:08d}.ctpk", directory / f"seg-{seq:08d}.idx"


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class SegmentFiles:
    """The segments of a store and the index of their blocks.

    File work (recover, write, rotate, evict, close) is serialised by the caller; ``lock`` (the store's)
    guards the segment list, the index and the counters, which readers share.
    """

    def __init__(self, directory: Path, lock: threading.RLock, stats: PacketStoreStats) -> None:
        self.directory = directory
        self.stats = stats
        self.segments: list[Segment] = []
        self.current: Segment | None = None
        self._lock = lock
        self._index = np.zeros(0, INDEX_DTYPE)
        self._count = 0
        self._seg_fd: int | None = None
        self._idx_fd: int | None = None
        self._next_seq = 0

    def rows(self) -> np.ndarray:
        """The index records, oldest block first (a view: hold the lock, copy to keep)."""
        return self._index[: self._count]

    @property
    def disk_bytes(self) -> int:
        """Bytes of every segment and index file."""
        return sum(s.size + s.index_size for s in self.segments)

    def recover(self) -> None:
        """Load the index files (dropping records past the end of their segment) and the disk counters."""
        rows = []
        for idx_path in sorted(self.directory.glob("seg-*.idx")):
            seq = int(idx_path.stem.split("-")[1])
            seg_path, _ = segment_paths(self.directory, seq)
            if not seg_path.is_file():
                idx_path.unlink(missing_ok=True)
                continue
            raw = idx_path.read_bytes()
            recs = np.frombuffer(raw[: len(raw) - len(raw) % INDEX_DTYPE.itemsize], INDEX_DTYPE)
            size = seg_path.stat().st_size
            recs = recs[(recs["offset"] + recs["length"]) <= size]
            rows.append(recs)
            self.segments.append(Segment(seq, seg_path, idx_path, size, idx_path.stat().st_size))
            self._next_seq = seq + 1
        if rows:
            self._index = np.concatenate(rows).copy()
            self._count = self._index.shape[0]
        self.refresh_disk_stats()

    def write_block(self, body: bytes, rec: np.ndarray, segment_bytes: int) -> None:
        """Append a block and its index record (rotating beyond ``segment_bytes``); count it."""
        seg = self.current
        if seg is None or seg.size + len(body) > segment_bytes and seg.size > 0:
            self._rotate()
            seg = self.current
        assert seg is not None and self._seg_fd is not None and self._idx_fd is not None
        rec["segment"] = seg.seq
        rec["offset"] = seg.size
        write_all(self._seg_fd, body)
        raw = rec.tobytes()
        write_all(self._idx_fd, raw)
        with self._lock:
            seg.size += len(body)
            seg.index_size += len(raw)
            if self._count == self._index.shape[0]:
                grown = np.zeros(max(64, 2 * self._count), INDEX_DTYPE)
                grown[: self._count] = self._index[: self._count]
                self._index = grown
            self._index[self._count] = rec[0]
            self._count += 1
            s = self.stats
            s.packets_written += int(rec["n"][0])
            s.bytes_written += int(rec["data_len"][0])
            s.blocks_written += 1
            self.refresh_disk_stats()

    def evict(self, budget_bytes: int) -> None:
        """Delete the oldest segments while the files exceed ``budget_bytes``."""
        while True:
            with self._lock:
                if self.disk_bytes <= budget_bytes or not self.segments:
                    return
                oldest = self.segments[0]
            if oldest is self.current:
                self.close_segment()
            with self._lock:
                self.segments.pop(0)
                rows = self.rows()
                dead = rows[rows["segment"] == oldest.seq]
                keep = rows[rows["segment"] != oldest.seq]
                self._index = keep.copy()
                self._count = keep.shape[0]
                s = self.stats
                s.evicted_segments += 1
                s.evicted_packets += int(dead["n"].sum())
                s.evicted_bytes += int(dead["data_len"].sum())
                self.refresh_disk_stats()
            oldest.path.unlink(missing_ok=True)
            oldest.index_path.unlink(missing_ok=True)

    def close_segment(self) -> None:
        """Close the current segment (the next block opens a new one)."""
        for fd in (self._seg_fd, self._idx_fd):
            if fd is not None:
                os.close(fd)
        self._seg_fd = self._idx_fd = None
        self.current = None

    def refresh_disk_stats(self) -> None:
        """Recount the disk figures of the stats (hold the lock)."""
        rows = self.rows()
        s = self.stats
        s.segments = len(self.segments)
        s.disk_bytes = self.disk_bytes
        s.stored_packets = int(rows["n"].sum())
        s.oldest_ns = int(rows["min_ts"].min()) if rows.shape[0] else 0
        s.newest_ns = int(rows["max_ts"].max()) if rows.shape[0] else 0

    def _rotate(self) -> None:
        self.close_segment()
        seq = self._next_seq
        self._next_seq += 1
        seg_path, idx_path = segment_paths(self.directory, seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._seg_fd = os.open(seg_path, flags, 0o640)
        self._idx_fd = os.open(idx_path, flags, 0o640)
        seg = Segment(seq, seg_path, idx_path)
        with self._lock:
            self.segments.append(seg)
        self.current = seg
