"""Benchmark: a policy's tcpdump filter run on stored flow keys (the dry-run's per-flow work) against tcpdump.

Builds N random flow keys (IPv4/IPv6, TCP/UDP/ICMP, some 802.1Q-tagged), times
``directions_accepted`` (two representative frames per flow built in numba, then the numba BPF VM) on one
core, writes the client->server frames as a pcap and times ``tcpdump -r F -w OUT EXPR`` on the same frames,
checking that tcpdump keeps exactly the frames cloudtap accepted. Prints flows/s (two frames each: both
directions), tcpdump frames/s and the per-frame ratio (> 1: cloudtap faster); writes
``bench/results/dry_run_bpf.json``.

Usage: ``python bench/controller/dry_run_bpf.py [--flows N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from cloudtap.server.controller import _dry_run_frames as _k
from cloudtap.server.controller.dry_run_bpf import directions_accepted

EXPRESSIONS = ("tcp port 5432", "vlan and udp port 53", "net 10.1.0.0/16 and tcp", "ip6 and tcp dst port 443")


def flow_keys(n: int, seed: int = 11) -> dict[str, np.ndarray]:
    """``n`` random flow keys."""
    rng = np.random.default_rng(seed)
    v6 = rng.random(n) < 0.2
    lo4 = lambda: (0xFFFF << 32) | (10 << 24) | rng.integers(0, 1 << 24, n).astype(np.uint64)  # noqa: E731
    keys = {
        "client_hi": np.where(v6, np.uint64(0x20010DB800000000), 0).astype(np.uint64),
        "client_lo": np.where(v6, rng.integers(1, 1 << 62, n).astype(np.uint64), lo4()).astype(np.uint64),
        "server_hi": np.where(v6, np.uint64(0x20010DB800000000), 0).astype(np.uint64),
        "server_lo": np.where(v6, rng.integers(1, 1 << 62, n).astype(np.uint64), lo4()).astype(np.uint64),
        "client_port": rng.integers(1024, 65535, n),
        "server_port": rng.choice([53, 80, 443, 5432, 6379, 8080], n),
        "proto": rng.choice([6, 17, 1], n, p=[0.7, 0.25, 0.05]),
        "ip_ver": np.where(v6, 6, 4),
        "vlan": np.where(rng.random(n) < 0.3, 101, 0),
        "client_mac": rng.integers(1, 1 << 47, n).astype(np.uint64),
        "server_mac": rng.integers(1, 1 << 47, n).astype(np.uint64),
    }
    keys["proto"] = np.where(v6 & (keys["proto"] == 1), 58, keys["proto"])
    return keys


def write_pcap(keys: dict[str, np.ndarray], path: Path) -> None:
    """The client->server frames of ``keys`` as a classic pcap (Ethernet)."""
    n = len(keys["client_lo"])
    u = {k: np.ascontiguousarray(v, np.uint64) for k, v in keys.items()}
    data, cap = np.zeros(n * _k.STRIDE, np.uint8), np.zeros(n, np.uint32)
    _k.build_frames(u["client_hi"], u["client_lo"], u["server_hi"], u["server_lo"], u["client_port"], u["server_port"],
                    u["proto"], u["ip_ver"], u["vlan"], u["client_mac"], u["server_mac"], data, cap)  # fmt: skip
    rec = np.zeros((n, 16 + _k.STRIDE), np.uint8)
    hdr = rec[:, :16].view("<u4")
    hdr[:, 2] = cap
    hdr[:, 3] = cap
    rec[:, 16:] = data.reshape(n, _k.STRIDE)
    keep = (
        np.arange(16 + _k.STRIDE)[None, :] < (16 + cap.astype(np.int64))[:, None]
    )  # each record at its length
    with open(path, "wb") as fh:
        fh.write(np.array([0xA1B2C3D4, 0x00040002, 0, 0, 65535, 1], "<u4").tobytes())
        fh.write(rec[keep].tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    keys = flow_keys(args.flows)
    directions_accepted("tcp", {k: v[:10] for k, v in keys.items()})  # numba cache loaded before timing
    tmp = Path(tempfile.mkdtemp())
    pcap = tmp / "c2s.pcap"
    write_pcap(keys, pcap)
    results = []
    for expr in EXPRESSIONS:
        best, accepted = float("inf"), 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            c2s, _ = directions_accepted(expr, keys)
            best = min(best, time.perf_counter() - t0)
            accepted = int(c2s.sum())
        row = {"expression": expr, "flows": args.flows, "cloudtap_s": best, "cloudtap_flows_per_s": args.flows / best,
               "accepted_c2s": accepted}  # fmt: skip
        if shutil.which("tcpdump"):
            out = tmp / "kept.pcap"
            tbest = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                subprocess.run(["taskset", "-c", str(min(os.sched_getaffinity(0))), "tcpdump", "-r", str(pcap), "-w",
                                str(out), expr], check=True, capture_output=True)  # fmt: skip
                tbest = min(tbest, time.perf_counter() - t0)
            count = subprocess.run(
                ["tcpdump", "-r", str(out), "-nn", "-q"], check=True, capture_output=True, text=True
            )
            kept = len(count.stdout.splitlines())
            row.update(tcpdump_s=tbest, tcpdump_frames_per_s=args.flows / tbest, tcpdump_kept=kept,
                       same_verdicts=kept == accepted, frame_ratio=2 * tbest / best)  # fmt: skip
        results.append(row)
        print(
            f"{expr:28} cloudtap {row['cloudtap_flows_per_s'] / 1e6:6.2f} M flows/s (2 frames each)   "
            + (
                f"tcpdump {row['tcpdump_frames_per_s'] / 1e6:6.2f} M frames/s   per-frame ratio {row['frame_ratio']:5.2f}   "
                f"same verdicts: {row['same_verdicts']}"
                if "tcpdump_s" in row
                else "tcpdump: not installed"
            )
        )
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/dry_run_bpf.json").write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
