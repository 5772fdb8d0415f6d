"""Deduplicator: drop the second copy of a packet mirrored at two points.

When both ends of a conversation are mirrored (two VM ports of a vSwitch, the uplink and the VM
port, two ERSPAN sessions), every packet between them reaches the collector twice, with different
outer headers (tunnel source, VNI or ERSPAN session), often a TTL lower by one and a new IP
checksum. The deduplicator fingerprints the **inner** packet from its decoded row and a few of
its L4 bytes (see :func:`~cloudtap.decode._dedup_kernels.fingerprint`: TTL, checksums and outer
headers are left out) and drops a row whose fingerprint was seen less than ``window_ns`` earlier
(or later: copies from two sources may arrive out of order).

What it cannot tell apart: a genuine resend of byte-identical packet content within the window
from a stack that sends IP id 0 without TCP timestamps (a TCP retransmission changes the IP id on
Linux/Windows, and its TSval). Copies taken before and after segmentation offload (one 64 KB TSO
segment vs. its MSS-sized wire packets) are not duplicates to it. Non-IP rows are always kept.

The cache is bounded (``capacity`` fingerprints, a power of two, 16 bytes each): when full, the
oldest entry of a set is overwritten, so at very high rates a copy arriving after ``capacity``
other packets may be missed (kept).
"""

from __future__ import annotations

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.decode._dedup_kernels import WAYS, dedup_batch
from cloudtap.errors import ConfigError
from cloudtap.schema.packet import PACKET_DTYPE


def _readonly(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


class Deduplicator:
    """Keep-mask of decoded rows that drops mirror duplicates within a time window.

    Attributes:
        duplicates: rows marked as duplicates so far.
        passed: rows kept so far.
    """

    def __init__(self, window_ns: int = 50_000_000, capacity: int = 1 << 16) -> None:
        """Create an empty fingerprint cache.

        Args:
            window_ns: how far apart (ns, either direction) two copies may be and still be duplicates.
            capacity: fingerprints remembered; rounded up to a power of two, at least ``WAYS``.

        Raises:
            ConfigError: a negative window or a capacity below 1 or above 2**30.
        """
        if window_ns < 0:
            raise ConfigError(f"Deduplicator.window_ns: {window_ns!r} is negative")
        if not 1 <= capacity <= 1 << 30:
            raise ConfigError(f"Deduplicator.capacity: {capacity!r} is not in 1..2**30")
        size = max(WAYS, 1 << (int(capacity) - 1).bit_length())
        self.window_ns = int(window_ns)
        self.capacity = size
        self._fp = np.zeros(size, np.uint64)
        self._ts = np.zeros(size, np.int64)
        self.duplicates = 0
        self.passed = 0

    def mask(self, frames: FrameBatch, packets: np.ndarray) -> np.ndarray:
        """Which rows to keep: ``False`` for a copy of a packet seen within the window.

        Args:
            frames: the batch ``packets`` was decoded from (L4 bytes are read through ``frame_index``).
            packets: ``PACKET_DTYPE`` rows, in arrival order.

        Returns:
            ``bool`` array, one per row.
        """
        if not isinstance(packets, np.ndarray) or packets.dtype != PACKET_DTYPE or packets.ndim != 1:
            raise ValueError("packets must be a 1-D PACKET_DTYPE array")
        data = frames.data
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError("FrameBatch.data must be a 1-D uint8 array")
        n = len(frames)
        offset = np.ascontiguousarray(frames.offset, dtype=np.int64)
        cap_len = np.ascontiguousarray(frames.cap_len, dtype=np.uint32)
        if offset.shape != (n,) or cap_len.shape != (n,):
            raise ValueError("FrameBatch.offset and cap_len must have one entry per frame")
        rows = np.ascontiguousarray(packets)
        keep = np.empty(rows.shape[0], dtype=np.bool_)
        dups = dedup_batch(
            _readonly(np.ascontiguousarray(data)),
            _readonly(offset),
            _readonly(cap_len),
            _readonly(rows),
            self._fp,
            self._ts,
            self.window_ns,
            keep,
        )
        self.duplicates += int(dups)
        self.passed += int(rows.shape[0] - dups)
        return keep

    def reset(self) -> None:
        """Forget every fingerprint (counters are kept)."""
        self._fp[:] = 0
        self._ts[:] = 0
