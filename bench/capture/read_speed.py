"""Benchmark: read a capture with CaptureFile vs ``tcpdump -r F -w /dev/null``; optionally decode and meter it.

Usage: python bench/capture/read_speed.py [--file PATH | --packets N] [--runs 5] [--batch 4096] [--meter]

Prints best-of-``runs`` wall times with the page cache warm (numba's cache loaded by a warm-up call):
the record walk alone (``CaptureFile.batches``, open to close), and with ``--meter`` the stage split of a
read -> decode loop and ``meter_file`` end to end, each against tcpdump in the same run. Without
``--file`` it writes ``--packets`` copies of a 60-byte frame; for realistic frame sizes pass a capture,
e.g. ``cloudtap.synth.write_pcap(builtin_scenario('bench'), path)`` (1.09 M frames, 481 MB). Pin it to
one core for stable figures: ``taskset -c 0 python bench/capture/read_speed.py ...``.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cloudtap.capture.pcap_file import CaptureFile
from cloudtap.decode import decode_frames
from cloudtap.meter import meter_file
from cloudtap.meter.pipeline import FILE_BATCH_FRAMES

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


def best_of(fn: Callable[[], object], runs: int) -> float:
    """Best wall time of ``runs`` calls of ``fn`` (after one untimed warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def walk(path: Path, batch: int) -> int:
    """Open, read every batch, close; return the frame count."""
    with CaptureFile(path) as f:
        return sum(len(b) for b in f.batches(batch))


def read_decode_split(path: Path, batch: int) -> tuple[float, float]:
    """Seconds spent producing batches and decoding them, in one read -> decode loop."""
    t_read = t_decode = 0.0
    with CaptureFile(path) as f:
        batches = f.batches(batch)
        while True:
            t0 = time.perf_counter()
            frames = next(batches, None)
            t1 = time.perf_counter()
            t_read += t1 - t0
            if frames is None:
                return t_read, t_decode
            decode_frames(frames)
            t_decode += time.perf_counter() - t1


def line(label: str, seconds: float, frames: int, tcpdump: float | None) -> str:
    """One result line: time, Mpps and the tcpdump / this ratio."""
    ratio = f"   tcpdump/this {tcpdump / seconds:4.2f}x" if tcpdump else ""
    return f"{label:34s} {seconds * 1e3:8.1f} ms  ({frames / seconds / 1e6:5.1f} Mpps){ratio}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=None, help="an existing pcap/pcapng to read")
    ap.add_argument("--packets", type=int, default=1_000_000, help="synthetic file size without --file")
    ap.add_argument("--keep", type=Path, default=None, help="write the synthetic file here and keep it")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=FILE_BATCH_FRAMES, help="frames per batch")
    ap.add_argument("--meter", action="store_true", help="also time read/decode split and meter_file")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cloudtap-bench-"))
    try:
        path = args.file
        if path is None:
            path = args.keep or tmp / "bench.pcap"
            build_pcap(path, args.packets)
        frames = walk(path, args.batch)
        print(f"file: {path} ({frames} frames, {path.stat().st_size / 1e6:.1f} MB), batch {args.batch}")
        t_tcpdump = None
        if shutil.which("tcpdump") is not None:
            cmd = ["tcpdump", "-r", str(path), "-w", "/dev/null"]
            t_tcpdump = best_of(lambda: subprocess.run(cmd, check=True, capture_output=True), args.runs)
            print(line("tcpdump -r F -w /dev/null", t_tcpdump, frames, None))
        else:
            print("tcpdump not found; no comparison")
        print(
            line(
                "CaptureFile.batches (walk)",
                best_of(lambda: walk(path, args.batch), args.runs),
                frames,
                t_tcpdump,
            )
        )
        if args.meter:
            read_decode_split(path, args.batch)
            splits = [read_decode_split(path, args.batch) for _ in range(args.runs)]
            print(line("  read stage of read -> decode", min(s[0] for s in splits), frames, None))
            print(line("  decode stage of read -> decode", min(s[1] for s in splits), frames, None))
            t_meter = best_of(lambda: meter_file(path), args.runs)
            print(line("meter_file (end to end)", t_meter, frames, t_tcpdump))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
