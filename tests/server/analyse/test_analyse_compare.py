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
from cloudtap.server.analyse._sql import proto_name

A = {"time_from": "2026-11-20T01:55:00Z", "time_to": "2026-11-20T02:10:00Z"}


def test_compare_ranks_the_backup_edge_first_with_a_burst(
    astore: Any, names: DictNames, adata: AnalyseData
) -> None:
    r = compare(astore, CompareRequest(**A, baseline_from="2026-11-20T01:10:00Z"), names)
    assert r.baseline == {"from": "2026-11-20T01:10:00Z", "to": "2026-11-20T01:55:00Z"}
    top = r.edges[0]
    assert (top.source_name, top.target_name, top.server_port, top.proto) == (
        "db-01",
        "backup-01",
        873,
        "tcp",
    )
    assert top.status == "new" and top.value > 40e6 and top.baseline_value == 0 and top.rel_change is None
    assert (
        top.bursts
        and top.bursts[0].start == "2026-11-20T02:00:00Z"
        and top.bursts[0].end == "2026-11-20T02:03:00Z"
    )
    assert r.new_edges[0].source == adata.ip_of("db-01")
    assert r.endpoints[0].source_name in ("db-01", "backup-01") and r.endpoints[0].z and r.endpoints[0].z > 10
    assert (
        r.counts["new_edges"] == len([c for c in r.edges if c.status == "new"]) or r.counts["new_edges"] > 0
    )
    assert all(abs(a.abs_change) >= abs(b.abs_change) for a, b in zip(r.edges, r.edges[1:], strict=False))


def test_compare_by_z_at_vm_level(astore: Any, names: DictNames) -> None:
    r = compare(astore, CompareRequest(**A, baseline="before", level="vm", rank_by="z", limit=5), names)
    assert r.baseline == {"from": "2026-11-20T01:40:00Z", "to": "2026-11-20T01:55:00Z"}
    assert (r.edges[0].source_name, r.edges[0].target_name) == ("db-01", "backup-01")
    changed = [c for c in r.endpoints if c.status == "changed"]
    assert changed[0].source_name in ("db-01", "backup-01") and changed[0].z > 10


def test_same_window_changes_nothing(astore: Any, names: DictNames) -> None:
    r = compare(
        astore, CompareRequest(**A, baseline_from=A["time_from"], baseline_to=A["time_to"], bursts=0), names
    )
    assert r.counts["new_edges"] == r.counts["vanished_edges"] == 0
    assert all(c.abs_change == 0 for c in r.edges)


def test_yesterday_has_no_data_so_everything_is_new(astore: Any) -> None:
    r = compare(astore, CompareRequest(**A, bursts=0))
    assert (
        r.baseline["from"] == "2026-11-19T01:55:00Z"
        and r.counts["edges_in_window"] == r.counts["new_edges"] > 500
    )


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


def _recount(astore: Any, t0: str, t1: str) -> tuple[dict[tuple, float], dict[str, np.ndarray]]:
    """Per edge and per endpoint minute sums of bytes in [t0, t1), busiest agent per edge and minute."""
    rows = astore.query_arrow(
        "SELECT replaceRegexpOne(IPv6NumToString(client_ip), '^::ffff:', '') AS c, "
        "replaceRegexpOne(IPv6NumToString(server_ip), '^::ffff:', '') AS s, server_port AS p, proto, agent_id AS ag, "
        "toInt64(toUnixTimestamp(time)) AS t, toFloat64(bytes_c2s + bytes_s2c) AS v FROM analyse_tests.edge_1m "
        "WHERE time >= parseDateTimeBestEffort({a:String}) AND time < parseDateTimeBestEffort({b:String})",
        {"a": t0, "b": t1},
    ).to_pylist()
    per_agent: dict[tuple, float] = {}
    for r in rows:
        k = (r["c"], r["s"], r["p"], r["proto"], r["t"], r["ag"])
        per_agent[k] = per_agent.get(k, 0.0) + r["v"]
    edge_minute: dict[tuple, float] = {}
    for (c, s, p, proto, t, _), v in per_agent.items():
        edge_minute[(c, s, p, proto, t)] = max(edge_minute.get((c, s, p, proto, t), 0.0), v)
    start = int(np.datetime64(t0.rstrip("Z"), "s").astype(np.int64))
    n = (int(np.datetime64(t1.rstrip("Z"), "s").astype(np.int64)) - start) // 60
    edges: dict[tuple, np.ndarray] = {}
    points: dict[str, np.ndarray] = {}
    for (c, s, p, proto, t), v in edge_minute.items():
        edges.setdefault((c, s, p, proto_name(proto)), np.zeros(n))[(t - start) // 60] += v
        for ip in (c, s):
            points.setdefault(ip, np.zeros(n))[(t - start) // 60] += v
    return edges, points  # type: ignore[return-value]


def _upper_median(x: np.ndarray) -> float:
    """ClickHouse's quantileExact(0.5): the element at n // 2 of the sorted values."""
    return float(np.sort(x)[len(x) // 2])


def test_compare_stats_match_a_recount(astore: Any) -> None:
    """Totals, median and sigma of every edge and endpoint equal a plain recount of the stored minutes."""
    base = {"time_from": "2026-11-20T01:40:00Z", "time_to": "2026-11-20T01:55:00Z"}
    r = compare(astore, CompareRequest(**A, baseline="before", bursts=0, limit=1000))
    a_edges, a_points = _recount(astore, A["time_from"], A["time_to"])
    b_edges, b_points = _recount(astore, base["time_from"], base["time_to"])
    assert r.counts["edges"] == len(set(a_edges) | set(b_edges))
    assert r.counts["endpoints"] == len(set(a_points) | set(b_points))
    checked = 0
    for changes, a_map, b_map, key in (
        (r.edges, a_edges, b_edges, lambda c: (c.source, c.target, c.server_port, c.proto)),
        (r.endpoints, a_points, b_points, lambda c: c.source),
    ):
        for c in changes:
            k = key(c)
            a_vals, b_vals = a_map.get(k, np.zeros(15)), b_map.get(k, np.zeros(15))
            med = _upper_median(b_vals)
            dev = np.abs(b_vals - med)
            mad, meanad = _upper_median(dev) * 1.4826, dev.mean() * 1.2533
            sigma = mad if mad > 0 else meanad if meanad > 0 else None
            assert c.value == pytest.approx(a_vals.sum()) and c.baseline_value == pytest.approx(b_vals.sum())
            assert c.baseline_median == pytest.approx(med)
            assert (c.baseline_sigma is None) == (sigma is None)
            if sigma:
                assert c.baseline_sigma == pytest.approx(sigma)
                assert c.z == pytest.approx((a_vals.mean() - med) / sigma, abs=1e-3)
            checked += 1
    assert checked == len(r.edges) + len(r.endpoints) > 500


def test_long_baseline_is_read_in_whole_hours_from_edge_1h(astore: Any, names: DictNames) -> None:
    """12 h of baseline: hourly buckets inside it (edge_1h); A stays at 1 min; z compares A's hourly rate."""
    req = CompareRequest(time_from="2026-11-20T02:00:00Z", time_to="2026-11-20T03:00:00Z",
                         baseline_from="2026-11-19T13:30:00Z")  # fmt: skip
    r = compare(astore, req, names)
    assert r.baseline == {"from": "2026-11-19T14:00:00Z", "to": "2026-11-20T02:00:00Z"}  # whole hours inside
    assert (r.step_s, r.window_step_s, r.baseline_table, r.stored_table) == (3600, 60, "edge_1h", "edge_1m")
    top = r.edges[0]
    assert (top.source_name, top.target_name, top.server_port) == ("db-01", "backup-01", 873)
    # pushes at 00:00 and 01:00: 2 busy hours of 12, median 0, MAD 0 -> sigma from the mean deviation
    assert top.baseline_median == 0 and top.expected == pytest.approx(top.baseline_value / 12)
    sigma = 1.2533 * top.baseline_value / 12
    assert top.baseline_sigma == pytest.approx(sigma) and top.z == pytest.approx(top.value / sigma, abs=1e-3)
    assert top.bursts and top.bursts[0].start == "2026-11-20T02:00:00Z"  # bursts stay at 1 min
    short = compare(astore, CompareRequest(**A, baseline_from="2026-11-20T00:00:00Z", bursts=0))  # 115 min
    assert (short.step_s, short.baseline_table) == (60, "edge_1m")


def test_endpoint_series_read_as_two_scans_equals_the_or(
    astore: Any, names: DictNames, adata: AnalyseData
) -> None:
    from cloudtap.server.analyse._sql import Params
    from cloudtap.server.analyse.selector import Selector, edge_where
    from cloudtap.server.analyse.series import fetch_series, selector_series
    from cloudtap.server.analyse.window import resolve_window

    w = resolve_window("2026-11-20T00:00:00Z", "2026-11-20T03:00:00Z")
    sel = Selector(vm="db-01")
    split = selector_series(astore, "edge_1m", w, 60, sel, names)
    params = Params()
    joined = fetch_series(astore, "edge_1m", w, 60, edge_where(sel, params, names, w.mid_ns), params)
    assert split.metric("bytes").sum() > 40e6
    for c in ("bytes", "packets", "flows", "oneway"):
        np.testing.assert_allclose(split.metric(c), joined.metric(c))
