"""The flow table's narrow fields: slot size, edge counters flushed before they overflow, handshake times
reused as RTTs, MACs split in two. Same records and edges as the reference (Python integers, no widths)."""

from __future__ import annotations

import numpy as np
from packets import assert_same_edges, assert_same_records, run_meter, stack, tcp, udp

from cloudtap.meter import Meter, MeterConfig
from cloudtap.meter._state import DIR_STATE_DTYPE, FLOW_STATE_DTYPE
from cloudtap.meter.reference import KERNEL_QUIRKS, reference_meter

T0 = 1_800_000_000_000_000_000
MS = 1_000_000
S = 1_000_000_000
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def _same_as_reference(packets: np.ndarray, config: MeterConfig) -> tuple[np.ndarray, np.ndarray]:
    want_records, want_edges = reference_meter(packets, config, emulate=frozenset(KERNEL_QUIRKS))
    got_records, got_edges, _ = run_meter(packets, config)
    assert_same_records(got_records, want_records)
    assert_same_edges(got_edges, want_edges, config.edge_interval_s)
    return got_records, got_edges


def test_a_flow_slot_takes_364_bytes() -> None:
    """Flow state 160 B + two directions of 88 B + free/active lists 12 B + index share 16 B (load <= 0.5)."""
    assert (FLOW_STATE_DTYPE.itemsize, DIR_STATE_DTYPE.itemsize) == (160, 88)
    meter = Meter(MeterConfig(max_flows=1 << 16, initial_flows=1 << 16, output_batch=64))
    assert meter.bytes_per_flow_slot == 364.0


def test_edge_bytes_past_32_bits_in_one_second_are_flushed_early_not_wrapped() -> None:
    """Five 2 GB packets (the IP length field of a decoded row is 32 bits) in one second: 10 GB, twice
    past the 32-bit per-second counter. The bucket gets several deltas; summed they are the whole."""
    big = 2_000_000_000
    packets = stack(*(udp(T0 + k * MS, CLIENT, 40000, SERVER, 53, ip_len=big) for k in range(5)))
    records, edges = _same_as_reference(packets, MeterConfig())
    assert int(records["bytes_c2s"].sum()) == 5 * big
    assert len(edges) > 1 and len(set(edges["second_ns"].tolist())) == 1  # flushed early, same bucket
    assert int(edges["bytes_c2s"].sum()) == 5 * big and int(edges["packets_c2s"].sum()) == 5


def test_more_than_255_retransmissions_in_one_second_all_count() -> None:
    """The per-second retransmission counter is 8 bits: 300 repeats of one segment within a second."""
    rows = [
        tcp(T0, CLIENT, 40000, SERVER, 80, "S", seq=999),
        tcp(T0 + 1 * MS, SERVER, 80, CLIENT, 40000, "SA", seq=4999, ack=1000),
        tcp(T0 + 2 * MS, CLIENT, 40000, SERVER, 80, "A", seq=1000, ack=5000),
    ]
    rows += [tcp(T0 + 3 * MS + k * 100_000, CLIENT, 40000, SERVER, 80, "PA", seq=1000, ack=5000, payload=100)
             for k in range(301)]  # fmt: skip
    records, edges = _same_as_reference(stack(*rows), MeterConfig())
    assert int(records["retrans_c2s"].sum()) == 300
    assert int(edges["retrans"].sum()) == 300
    assert len(edges) == 2 and int(edges["retrans"].max()) == 255  # flushed early once, within the bucket


def test_handshake_times_become_the_rtts() -> None:
    """The latest SYN to the first SYN-ACK (server), the latest SYN-ACK to the ACK (client), as Argus."""
    syn_retry = [
        tcp(T0, CLIENT, 40001, SERVER, 443, "S", seq=99),
        tcp(T0 + 1 * S, CLIENT, 40001, SERVER, 443, "S", seq=99),  # retried: the server RTT starts here
        tcp(T0 + 1 * S + 3 * MS, SERVER, 443, CLIENT, 40001, "SA", seq=499, ack=100),
        tcp(T0 + 2 * S + 3 * MS, SERVER, 443, CLIENT, 40001, "SA", seq=499, ack=100),  # retried
        tcp(T0 + 2 * S + 5 * MS, CLIENT, 40001, SERVER, 443, "A", seq=100, ack=500),
    ]
    no_syn = [  # SYN-ACK first: no server RTT, the client's still measured
        tcp(T0 + 7 * MS, SERVER, 443, CLIENT, 40002, "SA", seq=0, ack=1),
        tcp(T0 + 8 * MS, CLIENT, 40002, SERVER, 443, "A", seq=1, ack=1),
    ]
    refused = [tcp(T0, CLIENT, 40003, SERVER, 444, "S"), tcp(T0 + 1 * MS, SERVER, 444, CLIENT, 40003, "RA")]
    mid_stream = [
        tcp(T0 + k * MS, CLIENT, 40004, SERVER, 443, "PA", seq=k * 10, payload=10) for k in range(3)
    ]
    records, edges = _same_as_reference(stack(*syn_retry, *no_syn, *refused, *mid_stream), MeterConfig())
    rtt = {int(r["client_port"]): (float(r["rtt_server_us"]), float(r["rtt_client_us"])) for r in records}
    assert rtt == {40001: (3000.0, 2000.0), 40002: (-1.0, 1000.0), 40003: (-1.0, -1.0), 40004: (-1.0, -1.0)}
    assert int(edges["rtt_count"].sum()) == 1 and float(edges["rtt_sum_us"].sum()) == 5000.0


def test_macs_keep_all_48_bits() -> None:
    packets = stack(
        udp(T0, CLIENT, 5000, SERVER, 53, src_mac=0xFEDC_BA98_7654),
        udp(T0 + MS, SERVER, 53, CLIENT, 5000, src_mac=0x0200_0000_0001),
    )
    records, _ = _same_as_reference(packets, MeterConfig())
    assert (int(records[0]["client_mac"]), int(records[0]["server_mac"])) == (
        0xFEDC_BA98_7654,
        0x0200_0000_0001,
    )
