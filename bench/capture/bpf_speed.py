"""Benchmark: the numba BPF VM against tcpdump on a synthetic 1M-packet pcap.

Writes a pcap of simple Ethernet frames with numpy (IPv4 TCP/UDP, IPv6 TCP, ARP; a fraction on
port 80), maps it into a FrameBatch, and times ``BpfProgram.match`` for a few expressions on one
core, then ``tcpdump -r F -w /dev/null 'tcp port 80'`` on the same file, and prints the ratio.

Usage: ``python bench/capture/bpf_speed.py [--packets N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from cloudtap.capture.bpf import compile_filter
from cloudtap.capture.frames import FrameBatch

FRAME_LEN = 78  # room for Ethernet + IPv6 + TCP
REC_LEN = 16 + FRAME_LEN
EXPRESSIONS = ("tcp port 80", "udp port 53", "tcp[tcpflags] & tcp-syn != 0", "not arp", "vlan and tcp")


def make_frames(n: int, seed: int = 7) -> tuple[np.ndarray, int]:
    """Build ``n`` frames as a ``uint8[n, FRAME_LEN]`` array; returns it and the tcp-port-80 count."""
    rng = np.random.default_rng(seed)
    f = np.zeros((n, FRAME_LEN), np.uint8)
    f[:, 0:6] = [0x02, 0, 0, 0, 0, 1]
    f[:, 6:12] = [0x02, 0, 0, 0, 0, 2]
    kind = rng.choice(4, size=n, p=[0.6, 0.25, 0.1, 0.05])  # 0 v4/tcp 1 v4/udp 2 v6/tcp 3 arp
    sport = rng.integers(1024, 65535, n).astype(np.uint16)
    dport = np.where(rng.random(n) < 0.3, 80, rng.integers(1, 65535, n)).astype(np.uint16)
    v4 = kind <= 1
    f[v4, 12:14] = [0x08, 0x00]
    f[v4, 14] = 0x45
    f[v4, 16:18] = [0, 60]
    f[v4, 22] = 64
    f[v4, 23] = np.where(kind[v4] == 0, 6, 17)
    f[v4, 26:30] = [10, 0, 0, 1]
    f[v4, 30:34] = [10, 0, 0, 2]
    v6 = kind == 2
    f[v6, 12:14] = [0x86, 0xDD]
    f[v6, 14] = 0x60
    f[v6, 19] = 20
    f[v6, 20] = 6
    f[v6, 21] = 64
    arp = kind == 3
    f[arp, 12:14] = [0x08, 0x06]
    l4 = np.where(v6, 54, 34)
    rows = np.flatnonzero(~arp)
    for j, part in enumerate((sport >> 8, sport & 0xFF, dport >> 8, dport & 0xFF)):
        f[rows, l4[rows] + j] = part[rows].astype(np.uint8)
    tcp = rows[kind[rows] != 1]
    f[tcp, l4[tcp] + 12] = 0x50
    f[tcp, l4[tcp] + 13] = np.where(rng.random(tcp.size) < 0.1, 0x02, 0x10)
    port80 = int(np.count_nonzero((kind != 1) & (kind != 3) & ((sport == 80) | (dport == 80))))
    return f, port80


def write_pcap(path: Path, frames: np.ndarray) -> None:
    """Write frames as a little-endian microsecond pcap (LINKTYPE_ETHERNET)."""
    n = frames.shape[0]
    hdr = np.array([0xA1B2C3D4, 0x00040002, 0, 0, 262144, 1], np.uint32).view(np.uint8)
    hdr = np.concatenate([hdr[:4], hdr[4:8], hdr[8:24]])  # magic, v2.4, zone, sigfigs, snaplen, lt
    rec = np.zeros((n, REC_LEN), np.uint8)
    ts = np.arange(n, dtype=np.int64)
    rh = np.zeros((n, 4), np.uint32)
    rh[:, 0] = 1_700_000_000 + ts // 1_000_000
    rh[:, 1] = ts % 1_000_000
    rh[:, 2] = FRAME_LEN
    rh[:, 3] = FRAME_LEN
    rec[:, :16] = rh.view(np.uint8).reshape(n, 16)
    rec[:, 16:] = frames
    with open(path, "wb") as fh:
        fh.write(hdr.tobytes())
        fh.write(rec.tobytes())


def read_batch(path: Path) -> FrameBatch:
    """Map the fixed-record pcap written above into a FrameBatch (no per-packet Python)."""
    data = np.fromfile(path, np.uint8)
    n = (data.size - 24) // REC_LEN
    rh = data[24:].reshape(n, REC_LEN)[:, :16].copy().view(np.uint32)
    return FrameBatch(
        data=data,
        offset=24 + np.arange(n, dtype=np.int64) * REC_LEN + 16,
        cap_len=rh[:, 2].copy(),
        wire_len=rh[:, 3].copy(),
        ts_ns=(rh[:, 0].astype(np.int64) * 1_000_000_000 + rh[:, 1].astype(np.int64) * 1000),
        linktype=np.ones(n, np.uint16),
        interface=np.zeros(n, np.uint16),
    )


def best_of(fn, repeat: int) -> float:
    """Smallest wall time of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bpf_speed.pcap"
        frames, port80 = make_frames(args.packets)
        write_pcap(path, frames)
        batch = read_batch(path)
        n = len(batch)
        print(f"{n} packets, {FRAME_LEN} B each, {path.stat().st_size / 1e6:.0f} MB pcap")
        vm_time = {}
        for expr in EXPRESSIONS:
            prog = compile_filter(expr)
            mask = prog.match(batch)  # compile/warm up
            t = best_of(lambda p=prog: p.match(batch), args.repeat)
            vm_time[expr] = t
            print(
                f"  VM  {expr!r:34} {len(prog):3d} insns  {np.count_nonzero(mask):8d} hits  "
                f"{t * 1e3:7.1f} ms  {n / t / 1e6:6.1f} Mpps"
            )
            if expr == "tcp port 80":
                assert int(np.count_nonzero(mask)) == port80, "VM disagrees with the generator"
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            print("tcpdump not found: no comparison")
            return
        cmd = [tcpdump, "-r", str(path), "-w", "/dev/null", "tcp port 80"]
        run = lambda: subprocess.run(cmd, check=True, capture_output=True)  # noqa: E731
        t_td = best_of(run, max(1, args.repeat // 2))
        t_vm = vm_time["tcp port 80"]
        print(
            f"  tcpdump -r F -w /dev/null 'tcp port 80': {t_td * 1e3:7.1f} ms  {n / t_td / 1e6:6.1f} Mpps"
            " (includes reading the file and writing matches)"
        )
        print(f"  ratio tcpdump / VM: {t_td / t_vm:.1f}x")


if __name__ == "__main__":
    main()
