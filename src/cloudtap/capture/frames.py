"""FrameBatch: raw frames as captured, the output of every packet source.

A batch points into one byte buffer (an mmap'ed file, or a copy of ring blocks); each frame is
described by parallel arrays. No per-frame Python object ever exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """A batch of raw frames.

    Attributes:
        data: ``uint8`` buffer holding the frames (may be a read-only view of a mapped file).
        offset: ``int64[n]``, start of each frame's bytes in ``data``.
        cap_len: ``uint32[n]``, bytes captured of each frame.
        wire_len: ``uint32[n]``, length of the frame on the wire (pcap ``orig_len``).
        ts_ns: ``int64[n]``, timestamp in ns since the Unix epoch.
        linktype: ``uint16[n]``, pcap LINKTYPE of each frame (pcapng interfaces may differ).
        interface: ``uint16[n]``, capture interface index (pcapng IDB index, ring/interface id live).
    """

    data: np.ndarray
    offset: np.ndarray
    cap_len: np.ndarray
    wire_len: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    interface: np.ndarray

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    @property
    def captured_bytes(self) -> int:
        """Sum of captured bytes in the batch."""
        return int(self.cap_len.sum(dtype=np.int64))

    @property
    def wire_bytes(self) -> int:
        """Sum of on-the-wire frame lengths in the batch."""
        return int(self.wire_len.sum(dtype=np.int64))

    @classmethod
    def empty(cls) -> FrameBatch:
        """A batch with no frames."""
        return cls(
            data=np.zeros(0, np.uint8),
            offset=np.zeros(0, np.int64),
            cap_len=np.zeros(0, np.uint32),
            wire_len=np.zeros(0, np.uint32),
            ts_ns=np.zeros(0, np.int64),
            linktype=np.zeros(0, np.uint16),
            interface=np.zeros(0, np.uint16),
        )
