"""Compile (or load from cache) every numba kernel before the first packet arrives."""

from __future__ import annotations

import time

import numpy as np

from cloudtap.capture.frames import FrameBatch


def warm_up() -> float:
    """Run every per-packet kernel the agent uses on a tiny batch; returns seconds spent.

    The first run on a host compiles the kernels into numba's cache (a few seconds, and a few
    hundred MiB of compiler memory, once); later starts only load them.
    """
    from cloudtap.capture.bpf import FrameFilter
    from cloudtap.decode import FragmentTracker, decode_frames
    from cloudtap.decode.dedup import Deduplicator
    from cloudtap.meter import Meter, MeterConfig

    started = time.perf_counter()
    frame = bytes.fromhex(
        "ffffffffffff0200000000010800"  # Ethernet
        "45000028000100004006f9c80a0000010a000002"  # IPv4 10.0.0.1 -> 10.0.0.2, TCP
        "d431005000000001000000005002ffff00000000"  # TCP SYN-less segment
    )
    data = np.frombuffer(frame, np.uint8).copy()
    batch = FrameBatch(
        data=data,
        offset=np.zeros(1, np.int64),
        cap_len=np.array([len(frame)], np.uint32),
        wire_len=np.array([len(frame)], np.uint32),
        ts_ns=np.array([time.time_ns()], np.int64),
        linktype=np.ones(1, np.uint16),
        interface=np.zeros(1, np.uint16),
    )
    FrameFilter("tcp").mask(batch)
    packets = decode_frames(batch)
    Deduplicator(capacity=16).mask(batch, packets)
    FragmentTracker(capacity=16).associate(packets)
    meter = Meter(MeterConfig(max_flows=16, output_batch=64))
    meter.add(packets)
    meter.tick(time.time_ns() + 10**9)
    meter.flush()
    return time.perf_counter() - started
