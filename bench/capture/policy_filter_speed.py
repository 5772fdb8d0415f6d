"""Benchmark: per-policy snap lengths (PolicyFilter, one chained program) against one ORed filter and tcpdump.

The frames of ``bpf_speed.py`` (1M Ethernet frames: IPv4 TCP/UDP, IPv6 TCP, ARP) get one of 16 source MACs
(16 VMs). Four policies select four VMs each, with their own filters and snap lengths, as the controller
compiles them for one agent. Timed on one core, best of R:

* ``PolicyFilter.mask``: the chained program in the numba VM, the kept length of each frame, and the cut;
* the same policies ORed into one libpcap expression, ``BpfProgram.match`` (what the agent ran before);
* ``tcpdump -r F -w /dev/null`` with that ORed expression (libpcap's interpreter, plus reading the file).

Usage: ``python bench/capture/policy_filter_speed.py [--packets N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bpf_speed import best_of, make_frames, read_batch, write_pcap  # noqa: E402

from cloudtap.capture.bpf import compile_filter  # noqa: E402
from cloudtap.capture.policy_filter import FilterPart, PolicyFilter, payload_snaplen  # noqa: E402

VMS = 16
POLICIES = [("tcp port 80", 512), ("udp port 53", 0), ("tcp", 256), (None, 0)]  # (bpf, payload bytes) per policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    frames, _ = make_frames(args.packets)
    frames[:, 11] = np.random.default_rng(3).integers(0, VMS, frames.shape[0])  # source MAC: one of 16 VMs
    frames[:, 5] = 0xEE  # destination MAC: none of them (a gateway)
    macs = [f"02:00:00:00:00:{i:02x}" for i in range(VMS)]
    parts = []
    for p, (bpf, payload) in enumerate(POLICIES):
        select = " or ".join(f"ether host {m}" for m in macs[4 * p : 4 * p + 2])  # two of each four VMs
        parts.append(FilterPart(select, bpf, payload_snaplen(payload) if payload else None, payload > 0, f"p{p}"))
    flt = PolicyFilter(parts, default_snaplen=128)
    ored = " or ".join(f"(({s}) and ({b}))" if b else f"({s})" for s, b in ((p.select, p.bpf) for p in parts))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy_filter_speed.pcap"
        write_pcap(path, frames)
        batch = read_batch(path)
        n = len(batch)
        caps = batch.cap_len.copy()
        one = compile_filter(ored)
        hits = int(flt.mask(batch).sum())  # warm up (and check): the same frames as the ORed filter
        assert hits == int(one.match(batch).sum()), "the chained program disagrees with the ORed filter"
        print(f"{n} packets, {len(POLICIES)} policies, {hits} kept; program {len(flt.program(1))} insns "
              f"(ORed: {len(one)})")  # fmt: skip

        def chained() -> None:
            batch.cap_len[:] = caps
            flt.mask(batch)

        t_chain = best_of(chained, args.repeat)
        t_or = best_of(lambda: one.match(batch), args.repeat)
        print(f"  PolicyFilter.mask (chained, kept lengths, cut): {t_chain * 1e3:7.1f} ms  {n / t_chain / 1e6:6.1f} Mpps")
        print(f"  ORed program, match only:                       {t_or * 1e3:7.1f} ms  {n / t_or / 1e6:6.1f} Mpps")
        print(f"  ratio chained / ORed: {t_chain / t_or:.2f}x")
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            print("tcpdump not found: no comparison")
            return
        cmd = [tcpdump, "-r", str(path), "-w", "/dev/null", ored]
        t_td = best_of(lambda: subprocess.run(cmd, check=True, capture_output=True), max(1, args.repeat // 2))
        print(f"  tcpdump -r F -w /dev/null (ORed): {t_td * 1e3:7.1f} ms  {n / t_td / 1e6:6.1f} Mpps "
              "(includes reading the file and writing matches)")  # fmt: skip
        print(f"  ratio tcpdump / PolicyFilter: {t_td / t_chain:.1f}x")


if __name__ == "__main__":
    main()
