"""The flow table starts small and doubles when full, up to ``max_flows``: records never depend on it."""

from __future__ import annotations

import numpy as np
from packets import T0, S, assert_same_edges, assert_same_records, random_traffic, run_meter, stack, udp

from cloudtap.meter import MeterConfig


def many_flows(n: int, packets_each: int = 3) -> np.ndarray:
    """``n`` UDP flows interleaved, so all of them are active at once."""
    rows = [
        udp(
            T0 + (k * n + i) * 1000,
            f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            40000,
            "10.255.0.1",
            53,
            20,
        )
        for k in range(packets_each)
        for i in range(n)
    ]
    return stack(*rows)


def test_a_growing_table_gives_the_records_of_a_full_size_one() -> None:
    packets = random_traffic(seed=7, sessions=2000, span_s=30.0)
    want, want_edges, fixed = run_meter(packets, MeterConfig(max_flows=1 << 14, initial_flows=1 << 14))
    got, got_edges, grown = run_meter(packets, MeterConfig(max_flows=1 << 14, initial_flows=16))
    assert_same_records(got, want)
    assert_same_edges(got_edges, want_edges)
    assert grown.stats.table_full_packets == 0
    assert 16 < grown.capacity < fixed.capacity  # it grew, only as far as the flows needed
    assert grown.capacity >= grown.stats.peak_active_flows


def test_growth_in_the_middle_of_a_batch_keeps_every_packet() -> None:
    packets = many_flows(1000)
    records, _, meter = run_meter(
        packets, MeterConfig(max_flows=4096, initial_flows=16), batches=[7, 700, 1100]
    )
    assert meter.capacity == 1024  # 16 doubled six times
    assert meter.stats.packets == len(packets) == meter.stats.metered
    assert len(records) == 1000 and int(records["packets_c2s"].sum() + records["packets_s2c"].sum()) == len(
        packets
    )


def test_the_table_stops_at_max_flows_and_counts_what_did_not_fit() -> None:
    packets = many_flows(300)
    records, _, meter = run_meter(packets, MeterConfig(max_flows=100, initial_flows=16))
    assert meter.capacity == 100  # 16, 32, 64, then capped at 100
    assert meter.stats.table_full_packets == 200 * 3
    assert meter.stats.packets == meter.stats.metered + meter.stats.table_full_packets
    assert len(records) == 100


def test_memory_follows_the_flows_held() -> None:
    small = run_meter(many_flows(10), MeterConfig(max_flows=1 << 20))[2]
    assert small.capacity == MeterConfig().initial_flows
    assert small.memory_bytes < 50 * (1 << 20)  # a 1M-slot table would be ~440 MiB
    expired = run_meter(
        stack(*[udp(T0 + i * S, "10.0.0.1", 1000 + i, "10.0.0.2", 53) for i in range(5)]),
        MeterConfig(max_flows=64, initial_flows=16, idle_timeout_s=1.0),
    )[2]
    assert expired.capacity == 16  # expired flows free their slots: no growth
