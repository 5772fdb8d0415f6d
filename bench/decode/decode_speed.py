"""Micro-benchmark: decode 1M Ethernet/IPv4/TCP frames on one core and print Mpps.

Usage: ``python bench/decode/decode_speed.py [n_frames] [repeats]``
"""

from __future__ import annotations

import sys
import time

import numpy as np

from cloudtap.capture.frames import FrameBatch
from cloudtap.decode import decode_frames

FRAME = bytes.fromhex(
    "0200000000010200000000020800"  # Ethernet
    "4500002e1234400040060000" "0a000001" "0a000002"  # IPv4, total length 46
    "d43101bb000003e8000007d05018faf00000000"  # TCP (20 bytes) ...
    "0" "000000000000"  # ... + 6 payload bytes
)


def build(n: int) -> FrameBatch:
    """``n`` 60-byte frames with varying addresses and ports, laid out back to back."""
    size = len(FRAME)
    buf = np.tile(np.frombuffer(FRAME, np.uint8), n).reshape(n, size)
    idx = np.arange(n, dtype=np.uint32)
    buf[:, 29] = idx & 0xFF  # source address, last two bytes
    buf[:, 28] = (idx >> 8) & 0xFF
    buf[:, 34] = (idx >> 16) & 0xFF  # source port high byte
    lens = np.full(n, size, np.uint32)
    return FrameBatch(
        data=buf.reshape(-1),
        offset=np.arange(n, dtype=np.int64) * size,
        cap_len=lens,
        wire_len=lens.copy(),
        ts_ns=np.arange(n, dtype=np.int64) * 1000,
        linktype=np.ones(n, np.uint16),
        interface=np.zeros(n, np.uint16),
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    frames = build(n)
    out = decode_frames(frames)  # compile / load cache
    assert (out["status"] == 0).all() and (out["proto"] == 6).all()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        decode_frames(frames, out=out)
        best = min(best, time.perf_counter() - t0)
    print(f"decode: {n} frames in {best * 1e3:.1f} ms -> {n / best / 1e6:.1f} Mpps (best of {repeats})")


if __name__ == "__main__":
    main()
