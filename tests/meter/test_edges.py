"""Edge metrics: the meter's per-flow 1-second deltas and their aggregation (cloudtap.meter.edges)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from packets import MS, T0, S, random_traffic, run_meter, stack, tcp, udp

from cloudtap.meter import MeterConfig, aggregate_edges, edges_with_text
from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import EDGE_KEYS, EDGE_SUMS
from cloudtap.meter.reference import KERNEL_QUIRKS, reference_meter
from cloudtap.schema.address import from_text
from cloudtap.schema.flow import (
    CLOSE_HALF_OPEN,
    CLOSE_ONGOING,
    CLOSE_SERVER_REFUSED,
    CLOSE_SYN_UNANSWERED,
    FLOW_DTYPE,
)

C, SV = "10.0.0.1", "10.0.0.2"


def run(impl: str, packets: np.ndarray, config: MeterConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    config = config or MeterConfig()
    if impl == "meter":
        records, deltas, _ = run_meter(packets, config)
        return records, deltas
    return reference_meter(packets, config)


def conversation(t: int) -> list[np.ndarray]:
    """A TCP connection with a 2 ms handshake, data in the next two seconds, FIN both ways."""
    return [
        tcp(t, C, 40000, SV, 80, "S", 99),
        tcp(t + MS, SV, 80, C, 40000, "SA", 499, 100),
        tcp(t + 2 * MS, C, 40000, SV, 80, "A", 100, 500),
        tcp(t + 700 * MS, C, 40000, SV, 80, "PA", 100, 500, 100),
        tcp(t + 2000 * MS, SV, 80, C, 40000, "PA", 500, 200, 200),
        tcp(t + 2100 * MS, C, 40000, SV, 80, "FA", 200, 700),
        tcp(t + 2101 * MS, SV, 80, C, 40000, "FA", 700, 201),
        tcp(t + 2102 * MS, C, 40000, SV, 80, "A", 201, 701),
    ]


@pytest.mark.parametrize("impl", ["meter", "reference"])
def test_one_connection_second_by_second(impl: str) -> None:
    packets = stack(*conversation(T0 + 500 * MS), udp(T0 + 10 * S, "10.9.0.1", 40000, "10.9.0.2", 53))
    _, deltas = run(impl, packets)
    rows = [r for r in aggregate_edges(deltas, 1.0).to_pylist() if r["proto"] == 6]
    assert [r["time_ns"] - T0 for r in rows] == [0, S, 2 * S]
    first, second, third = rows
    assert (first["client_lo"], first["server_lo"], first["server_port"]) == (
        from_text(C)[1],
        from_text(SV)[1],
        80,
    )
    assert (first["packets_c2s"], first["packets_s2c"], first["bytes_c2s"], first["bytes_s2c"]) == (
        2,
        1,
        80,
        40,
    )
    assert (first["flows_opened"], first["rtt_count"], first["rtt_sum_us"]) == (1, 1, 2000.0)
    assert (second["packets_c2s"], second["packets_s2c"], second["bytes_c2s"]) == (1, 0, 140)
    assert (third["packets_c2s"], third["packets_s2c"], third["bytes_c2s"], third["bytes_s2c"]) == (
        2,
        2,
        80,
        280,
    )
    assert sum(r["flows_opened"] for r in rows) == sum(r["flows_closed"] for r in rows) == 1
    assert sum(r["flows_failed"] + r["retrans"] for r in rows) == 0
    minute = [r for r in aggregate_edges(deltas, 60.0).to_pylist() if r["proto"] == 6]
    assert len(minute) == 1 and minute[0]["time_ns"] == T0
    for name in EDGE_SUMS:
        assert minute[0][name] == sum(r[name] for r in rows), name


@pytest.mark.parametrize("impl", ["meter", "reference"])
def test_failed_flows(impl: str) -> None:
    rows = [
        tcp(T0 + S, C, 40001, SV, 80, "S", 1),  # unanswered
        tcp(T0 + S, C, 40002, SV, 80, "S", 1),  # refused
        tcp(T0 + S + MS, SV, 80, C, 40002, "RA", 0, 2),
        tcp(T0 + S, C, 40003, SV, 80, "S", 1),  # half open
        tcp(T0 + S + MS, SV, 80, C, 40003, "SA", 7, 2),
        *conversation(T0 + 2 * S),  # fine
        udp(T0 + 3 * S, C, 40004, SV, 53),  # fine (timeout is not failure)
    ]
    records, deltas = run(impl, stack(*rows))
    failed = {CLOSE_SYN_UNANSWERED, CLOSE_SERVER_REFUSED, CLOSE_HALF_OPEN}
    assert sorted(int(r["close_type"]) for r in records if r["close_type"] in failed) == sorted(failed)
    sums = aggregate_edges(deltas, 60.0).to_pylist()
    assert sum(r["flows_failed"] for r in sums) == 3
    assert sum(r["flows_closed"] for r in sums) == sum(r["flows_opened"] for r in sums) == 5
    assert sum(r["rtt_count"] for r in sums) == 1  # the half-open flow has no full RTT


def _by_minute(second_rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: dict.fromkeys(EDGE_SUMS, 0))
    for row in second_rows:
        key = ((row["time_ns"] // (60 * S)) * 60 * S, *(row[k] for k in EDGE_KEYS[1:]))
        for name in EDGE_SUMS:
            out[key][name] += row[name]
    return out


@pytest.mark.parametrize("impl", ["meter", "reference"])
def test_minute_edges_are_sums_of_second_edges_and_match_records(impl: str) -> None:
    config = MeterConfig(idle_timeout_s=20, tcp_idle_timeout_s=60, record_interval_s=30)
    packets = random_traffic(11, 200, 300)
    records, deltas = run(impl, packets, config)
    seconds = aggregate_edges(deltas, 1.0).to_pylist()
    minutes = aggregate_edges(deltas, 60.0).to_pylist()
    assert all(r["time_ns"] % S == 0 for r in seconds)
    assert all(r["time_ns"] % (60 * S) == 0 for r in minutes)
    assert len(minutes) < len(seconds)
    rolled = _by_minute(seconds)
    assert len(rolled) == len(minutes)
    for row in minutes:
        want = rolled[(row["time_ns"], *(row[k] for k in EDGE_KEYS[1:]))]
        for name in EDGE_SUMS:
            assert row[name] == pytest.approx(want[name], rel=1e-12), name
    # Edges and records count the same traffic.
    for name in ("packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c"):
        assert sum(r[name] for r in minutes) == int(records[name].sum()), name
    assert sum(r["retrans"] for r in minutes) == int(
        records["retrans_c2s"].sum() + records["retrans_s2c"].sum()
    )
    flows = np.unique(records["flow_id"]).size
    assert sum(r["flows_opened"] for r in minutes) == sum(r["flows_closed"] for r in minutes) == flows
    finals = records[records["close_type"] != CLOSE_ONGOING]
    assert len(finals) == flows
    failed = np.isin(finals["close_type"], [CLOSE_SYN_UNANSWERED, CLOSE_SERVER_REFUSED, CLOSE_HALF_OPEN])
    assert sum(r["flows_failed"] for r in minutes) == int(failed.sum()) > 0
    full = finals[(finals["rtt_client_us"] >= 0) & (finals["rtt_server_us"] >= 0)]
    assert sum(r["rtt_count"] for r in minutes) == len(full) > 0
    assert sum(r["rtt_sum_us"] for r in minutes) == pytest.approx(
        float((full["rtt_client_us"] + full["rtt_server_us"]).sum()), rel=1e-9
    )


def test_edge_interval_setting_sets_the_bucket() -> None:
    config = MeterConfig(edge_interval_s=2.0)
    packets = stack(*[udp(T0 + i * 700 * MS, C, 40000, SV, 53) for i in range(10)])
    _, deltas, _ = run_meter(packets, config)
    assert set((deltas["second_ns"] - T0).tolist()) == {0, 2 * S, 4 * S, 6 * S}
    assert int(deltas["packets_c2s"].sum()) == 10
    want, want_edges = reference_meter(packets, config)
    assert aggregate_edges(deltas, 2.0).equals(aggregate_edges(want_edges, 2.0))


def test_meter_and_reference_edges_agree_per_second() -> None:
    config = MeterConfig(idle_timeout_s=20, tcp_idle_timeout_s=60, record_interval_s=30)
    packets = random_traffic(12, 150, 300)
    _, got, _ = run_meter(packets, config)
    _, want = reference_meter(packets, config, emulate=KERNEL_QUIRKS)
    a = aggregate_edges(got, 1.0).sort_by([(k, "ascending") for k in EDGE_KEYS])
    b = aggregate_edges(want, 1.0).sort_by([(k, "ascending") for k in EDGE_KEYS])
    assert a.drop_columns(["rtt_sum_us"]).equals(b.drop_columns(["rtt_sum_us"]))
    assert np.allclose(a["rtt_sum_us"].to_numpy(), b["rtt_sum_us"].to_numpy(), rtol=1e-12)


def test_aggregate_edges_sums_deltas() -> None:
    deltas = np.zeros(3, EDGE_DELTA_DTYPE)
    deltas["second_ns"] = [T0, T0 + S, T0 + 61 * S]
    deltas["server_port"] = 80
    deltas["proto"] = 6
    deltas["packets_c2s"] = [1, 2, 4]
    deltas["rtt_sum_us"] = [1.5, 0.0, 2.5]
    deltas["rtt_count"] = [1, 0, 1]
    edges = aggregate_edges(deltas, 60.0)
    assert edges.column_names == list(EDGE_KEYS) + list(EDGE_SUMS)
    assert edges["time_ns"].to_pylist() == [T0, T0 + 60 * S]
    assert edges["packets_c2s"].to_pylist() == [3, 4]
    assert edges["rtt_sum_us"].to_pylist() == [1.5, 2.5]
    assert aggregate_edges(deltas[:0], 1.0).num_rows == 0


def test_aggregate_edges_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError, match="EDGE_DELTA_DTYPE"):
        aggregate_edges(np.zeros(2, FLOW_DTYPE), 1.0)


def test_edges_with_text_renders_addresses() -> None:
    packets = stack(*conversation(T0), tcp(T0, "fd00::1", 40000, "fd00::2", 443, "S", 1))
    _, deltas, _ = run_meter(packets)
    table = edges_with_text(aggregate_edges(deltas, 60.0))
    assert "client_hi" not in table.column_names
    assert table.column_names[1:3] == ["client_ip", "server_ip"]
    pairs = set(zip(table["client_ip"].to_pylist(), table["server_ip"].to_pylist(), strict=True))
    assert pairs == {(C, SV), ("fd00::1", "fd00::2")}
