"""Benchmark: how fast AfPacketSource drains a full TPACKET_V3 ring (frames per second, one core).

A namespace "VM" blasts one prebuilt 60-byte frame with raw AF_PACKET sends into its veth while the
source is opened on the host-side tap but not read, until the ring is full (or ``--frames`` were
sent). Then ``read(0)`` + a trivial consumer (``len(batch)``) drains the ring, timed. Several rounds;
prints each round and the best, in Mpps of wall time and of the reading thread's CPU time.

Usage (root): python bench/agent/ring_drain.py [--rounds 3] [--block-size 1048576] [--block-count 64]
              [--read-blocks N] [--snaplen 64] [--senders 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from cloudtap.capture import _afpacket_kernels as K  # noqa: E402
from cloudtap.capture.afpacket import AfPacketSource, RingConfig  # noqa: E402
from netns import VirtualNetwork, netns_available  # noqa: E402

FRAME = bytes.fromhex(
    "020000000002"  # dst (unknown to the bridge-less veth: frame ends at the tap)
    "020000000001"
    "0800"
    "4500002e000040004011"
    "0000"
    "0a4d0901"
    "0a4d0902"  # IPv4 10.77.9.1 -> 10.77.9.2, UDP
    "30390050001a0000"
).ljust(60, b"\0")


def ring_full(src: AfPacketSource) -> bool:
    """True when every block of the (single) ring is waiting for the reader."""
    region, cfg = src._region, src.config  # noqa: SLF001 - a benchmark may peek
    assert region is not None
    status = region.v32[K.BLK_STATUS // 4 : cfg.ring_bytes // 4 : cfg.block_size // 4]
    return bool((status & K.TP_STATUS_USER).all())


def fill(src: AfPacketSource, vm, frames: int, senders: int) -> float:
    """Send until the ring is full or ``frames`` were sent; returns the send rate (pps)."""
    name = src.interfaces[0]
    seen0 = src.stats().per_interface[name]["kernel_packets"]
    t0 = time.perf_counter()
    procs = [vm.send_frames(FRAME, frames // senders) for _ in range(senders)]
    while any(p.poll() is None for p in procs):
        if ring_full(src):
            break
        time.sleep(0.01)
    for p in procs:
        p.kill()
        p.wait()
    elapsed = time.perf_counter() - t0
    time.sleep(3 * src.config.block_timeout_ms / 1000 + 0.02)  # let the last partial block retire
    return (src.stats().per_interface[name]["kernel_packets"] - seen0) / max(elapsed, 1e-9)


def drain(src: AfPacketSource) -> tuple[int, float, float]:
    """Read until the ring is empty; returns (frames, wall seconds, thread CPU seconds)."""
    n = 0
    c0, t0 = time.thread_time(), time.perf_counter()
    while True:
        batch = src.read(0)
        if batch is None:
            break
        n += len(batch)
    return n, time.perf_counter() - t0, time.thread_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=1 << 20)
    ap.add_argument("--block-count", type=int, default=64)
    ap.add_argument("--read-blocks", type=int, default=None)
    ap.add_argument("--snaplen", type=int, default=64)
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--frames", type=int, default=2_000_000, help="stop sending after this many per round")
    args = ap.parse_args()
    ok, why = netns_available()
    if not ok:
        sys.exit(f"ring_drain: {why}")
    cfg = RingConfig(
        block_size=args.block_size,
        block_count=args.block_count,
        snaplen=args.snaplen,
        read_blocks=args.read_blocks,
    )
    results = []
    with VirtualNetwork(prefix="ctbn", bridge=False) as net:
        vm = net.add_vm("gen", "10.77.9.1/24")
        with AfPacketSource([vm.tap_name], cfg) as src:
            drain(src)  # warm-up: compile/load the kernels
            for r in range(args.rounds):
                pps_in = fill(src, vm, args.frames, args.senders)
                frames, wall, cpu = drain(src)
                results.append((frames / wall / 1e6, frames / max(cpu, 1e-9) / 1e6))
                print(
                    f"round {r}: {frames} frames in ring (filled at {pps_in / 1e3:.0f} kpps), drained in "
                    f"{wall * 1e3:.1f} ms: {results[-1][0]:.2f} Mpps wall, {results[-1][1]:.2f} Mpps per core (CPU)"
                )
            drops = src.stats().kernel_drops
    best = max(results)
    print(
        f"ring {args.block_count} x {args.block_size} B, snaplen {args.snaplen}, "
        f"{cfg.blocks_per_read} blocks/read: best {best[0]:.2f} Mpps wall, {best[1]:.2f} Mpps per core; "
        f"median {statistics.median(r[0] for r in results):.2f} Mpps wall; kernel drops while full: {drops}"
    )


if __name__ == "__main__":
    main()
