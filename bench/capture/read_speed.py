"""Benchmark: read a ~1M-packet pcap with CaptureFile vs ``tcpdump -r F -w /dev/null``.

Usage: python bench/capture/read_speed.py [--packets N] [--keep PATH]
Prints both wall times (best of 3, warm page cache) and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from cloudtap.capture.pcap_file import CaptureFile

FRAME_LEN = 60


def build_pcap(path: Path, packets: int) -> None:
    """Write ``packets`` copies of a 60-byte Ethernet/IPv4/UDP frame with 1 µs spaced timestamps."""
    fields = [("sec", "<u4"), ("usec", "<u4"), ("cap", "<u4"), ("wire", "<u4"), ("frame", "u1", FRAME_LEN)]
    rec = np.dtype(fields)
    recs = np.zeros(packets, rec)
    t_us = 1_700_000_000 * 1_000_000 + np.arange(packets, dtype=np.int64)
    recs["sec"] = t_us // 1_000_000
    recs["usec"] = t_us % 1_000_000
    recs["cap"] = FRAME_LEN
    recs["wire"] = FRAME_LEN
    eth = bytes.fromhex("0200000000020200000000010800")
    ip = bytes.fromhex("4500002e00004000401100000a0000010a000002")
    udp = bytes.fromhex("3039005000120000")
    frame = (eth + ip + udp).ljust(FRAME_LEN, b"\0")
    recs["frame"] = np.frombuffer(frame, np.uint8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        fh.write(recs.tobytes())


def best_of(fn, runs: int = 3) -> float:
    """Best wall time of ``runs`` calls of ``fn``."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, default=None, help="write the test file here and keep it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cloudtap-bench-"))
    try:
        path = args.keep or tmp / "bench.pcap"
        build_pcap(path, args.packets)
        size_mb = path.stat().st_size / 1e6

        def ours() -> None:
            with CaptureFile(path) as f:
                n = sum(len(b) for b in f.batches())
            assert n == args.packets, n

        ours()  # warm-up: numba cache load, page cache
        t_ours = best_of(ours)
        print(f"file: {args.packets} packets, {size_mb:.1f} MB")
        mpps = args.packets / t_ours / 1e6
        print(f"cloudtap CaptureFile.batches(): {t_ours * 1e3:8.1f} ms  ({mpps:.1f} Mpps)")
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            print("tcpdump not found; no comparison")
            return
        cmd = [tcpdump, "-r", str(path), "-w", "/dev/null"]
        t_tcpdump = best_of(lambda: subprocess.run(cmd, check=True, capture_output=True))
        mpps = args.packets / t_tcpdump / 1e6
        print(f"tcpdump -r F -w /dev/null:      {t_tcpdump * 1e3:8.1f} ms  ({mpps:.1f} Mpps)")
        print(f"ratio tcpdump / cloudtap: {t_tcpdump / t_ours:.1f}x (> 1 means cloudtap is faster)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
