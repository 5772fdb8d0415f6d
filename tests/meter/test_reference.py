"""The numba meter against its slow twin (cloudtap.meter.reference) on seeded random traffic.

Each stream mixes a few hundred conversations (see ``packets.random_traffic``) over several record
intervals and idle timeouts; the meter is fed in batches of random sizes and must give exactly the
reference's records and, once aggregated, its edge metrics. The reference emulates the kernel's known
deviations from docs/flow-semantics.md (``KERNEL_QUIRKS``); each has a failing-by-design test in
test_meter.py, and the last test here proves every quirk is exercised and visible.
"""

from __future__ import annotations

import numpy as np
import pytest
from packets import assert_same_edges, assert_same_records, random_traffic, run_meter, udp

from cloudtap.meter import MeterConfig
from cloudtap.meter.reference import KERNEL_QUIRKS, reference_meter
from cloudtap.schema.flow import (
    CLOSE_FORCED,
    CLOSE_ONGOING,
    CLOSE_SERVER_REFUSED,
    CLOSE_TIMEOUT,
    FLOW_COUNTERS,
)

QUIRKS = frozenset(KERNEL_QUIRKS)

SHORT = MeterConfig(idle_timeout_s=20, tcp_idle_timeout_s=60, record_interval_s=30)
#: name -> (config, traffic seed, sessions, span in seconds, cut the stream at this fraction)
CASES = {
    "short_timeouts": (SHORT, 1, 300, 400, 1.0),
    "defaults": (MeterConfig(), 2, 300, 900, 1.0),
    "cut_mid_traffic": (SHORT, 3, 300, 400, 0.5),
    "slow_scan_small_output": (
        MeterConfig(idle_timeout_s=15, tcp_idle_timeout_s=40, record_interval_s=10, scan_interval_s=3,
                    close_linger_s=0.5, output_batch=64),
        4, 250, 300, 1.0,
    ),
    "table_full": (MeterConfig(max_flows=16, idle_timeout_s=20, tcp_idle_timeout_s=60, record_interval_s=30),
                   5, 300, 400, 1.0),
    "key_by_interface": (
        MeterConfig(idle_timeout_s=20, tcp_idle_timeout_s=60, record_interval_s=30, key_by_interface=True),
        8, 250, 300, 1.0,
    ),
    "edge_2s_ids_from_1000": (
        MeterConfig(idle_timeout_s=20, tcp_idle_timeout_s=60, record_interval_s=30, edge_interval_s=2,
                    flow_id_base=1000),
        6, 200, 300, 1.0,
    ),
}  # fmt: skip

_STATS = ("packets", "metered", "not_metered", "table_full_packets", "table_full_bytes",
          "flows_created", "records")  # fmt: skip


def _batches(n: int, seed: int) -> list[int]:
    """Random batch sizes summing to ``n``, including empty and one-row batches."""
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    left = n
    while left > 0:
        size = int(rng.choice([0, 1, 2, int(rng.integers(3, 50)), int(rng.integers(50, 3000))]))
        size = min(size, left)
        sizes.append(size)
        left -= size
    return sizes


@pytest.mark.parametrize("case", list(CASES))
def test_meter_equals_reference(case: str) -> None:
    config, seed, sessions, span, cut = CASES[case]
    packets = random_traffic(seed, sessions, span)
    packets = packets[: int(len(packets) * cut)]
    want_stats: dict[str, int] = {}
    want_records, want_edges = reference_meter(packets, config, emulate=QUIRKS, stats=want_stats)
    got_records, got_edges, meter = run_meter(packets, config, _batches(len(packets), seed))

    assert_same_records(got_records, want_records)
    assert_same_edges(got_edges, want_edges, config.edge_interval_s)
    assert_same_edges(got_edges, want_edges, 60.0)
    stats = meter.stats
    assert {name: getattr(stats, name) for name in _STATS} == {name: want_stats[name] for name in _STATS}
    assert stats.active_flows == 0
    # The stream exercised what it is meant to (so a silent generator change cannot hollow the test).
    assert len(want_records) > 300
    assert stats.metered + stats.not_metered + stats.table_full_packets == stats.packets == len(packets)
    closes = set(want_records["close_type"].tolist())
    assert {CLOSE_ONGOING, CLOSE_TIMEOUT, CLOSE_SERVER_REFUSED} <= closes
    if case == "cut_mid_traffic":
        assert CLOSE_FORCED in closes
    if case == "table_full":
        assert stats.table_full_packets > 0
    for name in ("retrans_c2s", "retrans_s2c", "ooo_c2s", "zero_window_s2c"):
        assert want_records[name].sum() > 0, name


def test_records_of_a_flow_sum_to_the_whole_flow() -> None:
    """Metering with one huge record interval gives, per flow, the sums of the periodic records."""
    base = dict(idle_timeout_s=20, tcp_idle_timeout_s=60)
    packets = random_traffic(7, 200, 400)
    periodic, _ = reference_meter(packets, MeterConfig(record_interval_s=30, **base), emulate=QUIRKS)
    year = MeterConfig(record_interval_s=365 * 86400, **base)  # no boundary inside the traffic
    whole, _ = reference_meter(packets, year, emulate=QUIRKS)
    got, _, _ = run_meter(packets, MeterConfig(record_interval_s=30, **base))
    assert_same_records(got, periodic)
    by_id = {int(r["flow_id"]): r for r in whole}
    assert len(by_id) == len(whole) < len(periodic)  # one record per flow
    assert set(np.unique(got["flow_id"]).tolist()) == set(by_id)
    for flow_id, rec in by_id.items():
        parts = got[got["flow_id"] == flow_id]
        assert parts["record_seq"].tolist() == list(range(len(parts)))
        for name in FLOW_COUNTERS:
            assert int(parts[name].sum()) == int(rec[name]), (flow_id, name)
        assert int(parts["first_ns"].min()) == int(rec["first_ns"])
        assert int(parts["last_ns"].max()) == int(rec["last_ns"])
        assert (parts["start_ns"] == rec["start_ns"]).all()


def test_no_kernel_quirk_is_open() -> None:
    """Known kernel deviations are emulated by name; none is open now (add one with its test)."""
    assert QUIRKS == set()



def test_reference_rejects_unknown_quirks() -> None:
    with pytest.raises(ValueError, match="unknown kernel quirks"):
        reference_meter(udp(10**18, "10.0.0.1", 1, "10.0.0.2", 2), MeterConfig(), emulate={"nope"})
