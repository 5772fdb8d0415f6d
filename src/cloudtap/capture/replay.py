"""ReplaySource: a capture file as a PacketSource, as fast as possible or at a multiple of its pace.

Frames come straight from ``CaptureFile`` batches (zero copy: ``data`` views the mapped file).
Pacing is per batch, never per frame: a batch is cut so that it spans at most ``slice_ms`` of
wall-clock time at the chosen speed, and ``read()`` sleeps until its last frame is due
(``start + (ts_last - ts_first) / speed``). Timestamps that go backwards count as the latest one
seen, so a disordered capture never makes the replay wait for the past.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.capture.source import SourceStats
from cloudtap.errors import CaptureError, ConfigError


class ReplaySource:
    """Replays a pcap/pcapng file; raises ``EOFError`` from ``read()`` once every frame was handed out."""

    #: it ends: the agent pauses it rather than closing it (a reopened replay would start over)
    finite = True

    def __init__(
        self,
        path: str | Path,
        speed: float | None = None,
        batch_frames: int = 65536,
        slice_ms: float = 10.0,
    ) -> None:
        """Open the file.

        Args:
            path: pcap or pcapng capture.
            speed: None replays as fast as possible; 1.0 at the recorded pace, 10.0 ten times faster.
            batch_frames: most frames per batch.
            slice_ms: with a speed, most wall-clock time one batch may span.

        Raises:
            ConfigError: ``speed``, ``batch_frames`` or ``slice_ms`` is not positive.
            CaptureError: the file cannot be opened or is not a capture.
        """
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ConfigError(f"replay speed must be a positive number or None (max), got {speed!r}")
        if batch_frames < 1:
            raise ConfigError(f"batch_frames must be >= 1, got {batch_frames}")
        if not slice_ms > 0:
            raise ConfigError(f"slice_ms must be > 0, got {slice_ms}")
        self.path = Path(path)
        self.speed = speed
        self._slice_ns = slice_ms * 1e6 * (speed or 1.0)
        self._file = CaptureFile(self.path)
        self._batches: Iterator[FrameBatch] = self._file.batches(batch_frames)
        self._pending: FrameBatch | None = None
        self._due_ts = np.zeros(0, np.int64)  # running max of the pending batch's timestamps
        self._pos = 0
        self._ts_hi = np.iinfo(np.int64).min
        self._t0_wall: float | None = None
        self._ts0 = 0
        self._stats = SourceStats()
        self._eof = False
        self._closed = False

    def read(self, timeout_s: float = 0.1) -> FrameBatch | None:
        """The next batch; None if it is not due within ``timeout_s`` (paced replay only).

        Raises:
            EOFError: the file is exhausted.
            CorruptCaptureError: the file is damaged (after every frame before the damage was read).
            CaptureError: the source is closed.
        """
        if self._closed:
            raise CaptureError(f"{self.path}: replay source is closed")
        batch = self._next_pending()
        start = self._pos
        if self.speed is None:
            end = len(batch)
        else:
            due_ts = self._due_ts
            end = int(np.searchsorted(due_ts, due_ts[start] + self._slice_ns, side="right"))
            end = max(end, start + 1)
            if self._t0_wall is None:
                self._t0_wall, self._ts0 = time.monotonic(), int(due_ts[start])
            due = self._t0_wall + (int(due_ts[end - 1]) - self._ts0) / 1e9 / self.speed
            wait = due - time.monotonic()
            if wait > timeout_s:
                time.sleep(max(0.0, timeout_s))
                return None
            if wait > 0:
                time.sleep(wait)
        self._pos = end
        out = _slice(batch, start, end)
        self._stats.packets += len(out)
        self._stats.bytes += out.wire_bytes
        return out

    def _next_pending(self) -> FrameBatch:
        if self._pending is not None and self._pos < len(self._pending):
            return self._pending
        if self._eof:
            raise EOFError(str(self.path))
        try:
            batch = next(self._batches)
        except StopIteration:
            self._eof = True
            self._pending = None
            raise EOFError(str(self.path)) from None
        self._pending, self._pos = batch, 0
        if self.speed is not None:
            due_ts = np.maximum.accumulate(np.maximum(batch.ts_ns, self._ts_hi))
            self._ts_hi = int(due_ts[-1])
            self._due_ts = due_ts
        return batch

    def stats(self) -> SourceStats:
        """Frames and wire bytes handed out so far (``per_interface`` keyed by the file name)."""
        s = self._stats
        per = {self.path.name: {"packets": s.packets, "bytes": s.bytes, "kernel_drops": 0, "filter_drops": 0}}
        return SourceStats(packets=s.packets, bytes=s.bytes, per_interface=per)

    def close(self) -> None:
        """Close the file (batches still held keep its mapping alive); idempotent."""
        if not self._closed:
            self._closed = True
            self._pending = None
            self._file.close()

    def __enter__(self) -> ReplaySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        pace = "max" if self.speed is None else f"{self.speed:g}x"
        return f"ReplaySource({str(self.path)!r}, speed={pace})"


def _slice(batch: FrameBatch, start: int, end: int) -> FrameBatch:
    if start == 0 and end == len(batch):
        return batch
    return FrameBatch(
        data=batch.data,
        offset=batch.offset[start:end],
        cap_len=batch.cap_len[start:end],
        wire_len=batch.wire_len[start:end],
        ts_ns=batch.ts_ns[start:end],
        linktype=batch.linktype[start:end],
        interface=batch.interface[start:end],
    )
