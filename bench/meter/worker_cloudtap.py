"""Subprocess worker: time ``meter_file`` in a fresh interpreter and print one JSON line.

Usage: python worker_cloudtap.py PCAP [--core N] [--stages]

Times: ``import_s`` (importing cloudtap.meter), ``first_s`` (the first ``meter_file`` call of the
process: loads numba's on-disk cache, faults in the flow table), ``steady_s`` (a second call, as a
long-running agent sees it). ``--stages`` adds a third pass timing read / decode (with the status totals) / fragments /
meter / flush separately (its second such pass is reported).
"""

from __future__ import annotations

import argparse
import json
import os
import time

T0 = time.perf_counter()


def stage_times(path: str) -> dict[str, float]:
    """One pass of the meter_file pipeline with each stage timed on its own (seconds)."""
    import numpy as np

    from cloudtap.capture.pcap_file import CaptureFile
    from cloudtap.decode import DecodeConfig, FragmentTracker, decode_frames
    from cloudtap.meter import Meter, MeterConfig
    from cloudtap.meter.pipeline import FILE_BATCH_FRAMES, FlowCollector
    from cloudtap.schema.packet import STATUS_NAMES

    clock = time.perf_counter
    spent = dict.fromkeys(("read", "decode", "fragments", "meter", "flush_collect"), 0.0)
    started = clock()
    collector = FlowCollector()
    meter = Meter(MeterConfig(), on_records=collector.on_records, on_edges=collector.on_edges)
    fragments, config = FragmentTracker(), DecodeConfig()
    counts = np.zeros(len(STATUS_NAMES), np.int64)
    with CaptureFile(path) as capture:
        batches = capture.batches(FILE_BATCH_FRAMES)  # the batch size meter_file reads
        while True:
            t = clock()
            batch = next(batches, None)
            spent["read"] += clock() - t
            if batch is None:
                break
            t = clock()
            packets = decode_frames(batch, config, counts=counts)  # status totals kept by the kernel
            t2 = clock()
            fragments.associate(packets)
            t3 = clock()
            meter.add(packets)
            t4 = clock()
            spent["decode"] += t2 - t
            spent["fragments"] += t3 - t2
            spent["meter"] += t4 - t3
    t = clock()
    meter.flush()
    collector.flows()
    collector.edge_deltas()
    spent["flush_collect"] = clock() - t
    spent["total"] = clock() - started
    spent["python_other"] = spent["total"] - sum(v for k, v in spent.items() if k != "total")
    return spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("--stages", action="store_true")
    args = ap.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    import numpy as np

    from cloudtap.meter import Meter, MeterConfig, meter_file

    imported = time.perf_counter()
    config = MeterConfig()
    first = meter_file(args.pcap, config)
    steady = meter_file(args.pcap, config)
    meter = Meter(config)
    flows = steady.flows
    out = {
        "import_s": imported - T0,
        "first_s": first.elapsed_s,
        "steady_s": steady.elapsed_s,
        "frames": steady.frames,
        "records": int(len(flows)),
        "flows": int(len(np.unique(flows["flow_id"]))),
        "decoded": steady.decoded,
        "peak_active_flows": steady.stats.peak_active_flows,
        "flows_created": steady.stats.flows_created,
        "table_full_packets": steady.stats.table_full_packets,
        "bytes_per_flow_slot": float(meter.bytes_per_flow_slot),
        "table_bytes": int(meter.memory_bytes),
        "max_flows": config.max_flows,
    }
    if args.stages:  # the second pass: allocator and page tables settled, like a long-running agent
        stage_times(args.pcap)
        out["stages"] = stage_times(args.pcap)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
