"""Every frame of a capture as arrays, read by cloudtap's own reader (shared by packet-store tests).

Usage: ``from capture_frames import frames_of`` (tests/ is on sys.path, see tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloudtap.capture.pcap_file import CaptureFile


def frames_of(path: Path) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """``(ts_ns, wire_len, frame bytes)`` of every packet of a pcap/pcapng."""
    ts, wl, data = [], [], []
    with CaptureFile(path) as cf:
        for b in cf.batches():
            ts.append(b.ts_ns.copy())
            wl.append(b.wire_len.copy())
            data += [b.data[o : o + c].tobytes() for o, c in zip(b.offset.tolist(), b.cap_len.tolist(), strict=True)]
    if not ts:
        return np.zeros(0, np.int64), np.zeros(0, np.uint32), []
    return np.concatenate(ts), np.concatenate(wl), data
