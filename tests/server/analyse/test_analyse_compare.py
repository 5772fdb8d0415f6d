"""Compare and burst detection on the hourly DB backup."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from analysedata import AnalyseData, DictNames

from cloudtap.server.analyse import (
    AnalysisError,
    BurstRequest,
    CompareRequest,
    compare,
    detect_bursts,
    find_bursts,
)

A = {"time_from": "2026-11-20T01:55:00Z", "time_to": "2026-11-20T02:10:00Z"}


def test_compare_ranks_the_backup_edge_first_with_a_burst(astore: Any, names: DictNames, adata: AnalyseData) -> None:
    r = compare(astore, CompareRequest(**A, baseline_from="2026-11-20T01:10:00Z"), names)
    assert r.baseline == {"from": "2026-11-20T01:10:00Z", "to": "2026-11-20T01:55:00Z"}
    top = r.edges[0]
    assert (top.source_name, top.target_name, top.server_port, top.proto) == ("db-01", "backup-01", 873, "tcp")
    assert top.status == "new" and top.value > 40e6 and top.baseline_value == 0 and top.rel_change is None
    assert top.bursts and top.bursts[0].start == "2026-11-20T02:00:00Z" and top.bursts[0].end == "2026-11-20T02:03:00Z"
    assert r.new_edges[0].source == adata.ip_of("db-01")
    assert r.endpoints[0].source_name in ("db-01", "backup-01") and r.endpoints[0].z and r.endpoints[0].z > 10
    assert r.counts["new_edges"] == len([c for c in r.edges if c.status == "new"]) or r.counts["new_edges"] > 0
    assert all(abs(a.abs_change) >= abs(b.abs_change) for a, b in zip(r.edges, r.edges[1:], strict=False))


def test_compare_by_z_at_vm_level(astore: Any, names: DictNames) -> None:
    r = compare(astore, CompareRequest(**A, baseline="before", level="vm", rank_by="z", limit=5), names)
    assert r.baseline == {"from": "2026-11-20T01:40:00Z", "to": "2026-11-20T01:55:00Z"}
    assert (r.edges[0].source_name, r.edges[0].target_name) == ("db-01", "backup-01")
    changed = [c for c in r.endpoints if c.status == "changed"]
    assert changed[0].source_name in ("db-01", "backup-01") and changed[0].z > 10


def test_same_window_changes_nothing(astore: Any, names: DictNames) -> None:
    r = compare(astore, CompareRequest(**A, baseline_from=A["time_from"], baseline_to=A["time_to"], bursts=0), names)
    assert r.counts["new_edges"] == r.counts["vanished_edges"] == 0
    assert all(c.abs_change == 0 for c in r.edges)


def test_yesterday_has_no_data_so_everything_is_new(astore: Any) -> None:
    r = compare(astore, CompareRequest(**A, bursts=0))
    assert r.baseline["from"] == "2026-11-19T01:55:00Z" and r.counts["edges_in_window"] == r.counts["new_edges"] > 500


def test_bad_baseline(astore: Any) -> None:
    with pytest.raises(AnalysisError) as err:
        compare(astore, CompareRequest(**A, baseline="last_year"))
    assert err.value.field == "baseline" and "last_week" in (err.value.allowed or [])


def test_bursts_of_a_vm_at_one_second(astore: Any, names: DictNames) -> None:
    r = detect_bursts(astore, BurstRequest(time_from="2026-11-20T00:00:00Z", time_to="2026-11-20T03:00:00Z",
                                           filter={"vm": "db-01", "port": 873}, step="1s", max_gap=5), names)  # fmt: skip
    assert r.stored_table == "edge_1s" and r.buckets == 10800
    assert [b.start[11:16] for b in r.bursts] == ["00:00", "01:00", "02:00"]
    assert all(170 <= b.buckets <= 190 for b in r.bursts)


def test_find_bursts_merges_runs_and_uses_the_reference() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(100, 5, 120)
    v[30:33] = 1000
    v[34] = 900
    v[80] = 600
    times = np.arange(120) * 60
    bursts, med, sigma = find_bursts(times, v, 60, max_gap=1)
    assert [(b.start[11:16], b.buckets) for b in bursts] == [("00:30", 5), ("01:20", 1)]
    assert 95 < med < 105 and 2 < sigma < 10
    assert bursts[0].end == "1970-01-01T00:35:00Z" and bursts[0].total == pytest.approx(3900)
    quiet, _, _ = find_bursts(times, v, 60, reference=v * 10)
    assert quiet == []
    assert find_bursts(times, np.zeros(120), 60)[0] == []
