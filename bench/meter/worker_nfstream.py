"""Subprocess worker: iterate every NFStream flow of a capture and print one JSON line.

Usage: python worker_nfstream.py PCAP [--core N]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("--core", type=int, default=None)
    args = ap.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    import nfstream

    started = time.perf_counter()
    streamer = nfstream.NFStreamer(
        source=args.pcap, n_meters=1, statistical_analysis=False, splt_analysis=0, n_dissections=0
    )
    flows = packets = 0
    for flow in streamer:
        flows += 1
        packets += flow.bidirectional_packets
    elapsed = time.perf_counter() - started
    out = {
        "seconds": elapsed,
        "flows": flows,
        "packets": packets,
        "version": nfstream.__version__,
        "idle_timeout_s": streamer.idle_timeout,
        "active_timeout_s": streamer.active_timeout,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
