"""Request metrics in topology, compare, drill-down and backtest, checked against numpy over the same rows.

Latency percentiles from the rollups are t-digest estimates: they are checked by rank (the share of
latencies at or below the answer), exact percentiles (drill-down, from the log) against
``np.percentile`` (linear interpolation, as ``quantileExactInclusive``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from requestdata import HOUR, MID, NS, T0, WINDOW, RequestData

from cloudtap.server.analyse import (
    AnalysisError,
    CompareRequest,
    DrillRequest,
    Signature,
    TopologyRequest,
    backtest,
    compare,
    drill,
    topology,
)
from cloudtap.server.analyse.metrics import REQUEST_METRICS
from cloudtap.server.analyse.robust import runs
from cloudtap.server.analyse.selector import Selector
from cloudtap.server.analyse.series import selector_series
from cloudtap.server.analyse.window import Window


def _lat_ms(d: RequestData, m: np.ndarray) -> np.ndarray:
    lat = d.rec["latency_us"][m]
    return lat[lat >= 0] / 1000.0


def _rank(values: np.ndarray, q: float) -> float:
    """Share of ``values`` at or below ``q``."""
    return float((values <= q + 1e-3).mean())


def _errors(d: RequestData, m: np.ndarray) -> int:
    return int((d.rec["status"][m] != 0).sum())


def test_topology_by_p99_puts_the_slow_database_first(rstore: Any, rdata: RequestData) -> None:
    t = topology(rstore, TopologyRequest(**HOUR, level="vm", metric="latency_p99"), rdata.names())
    assert t.stored_table == "request_1h" and t.metric == "latency_p99"  # a whole hour: the hourly rollup
    got = {(e.source_name, e.target_name, e.server_port, e.l7_proto): e.requests for e in t.edges}
    assert set(got) == {
        ("shop", "db", 3306, "mysql"),
        ("shop", "cache", 6379, "redis"),
        ("web", "shop", 80, "http"),
    }
    first = t.edges[0]
    assert (first.source_name, first.target_name) == ("shop", "db")
    for (client, server, _, _), stats in got.items():
        assert stats is not None
        m = rdata.mask(client, server)
        lat = _lat_ms(rdata, m)
        assert stats.requests == int(m.sum())  # shop -> db is seen by two agents: counted once
        assert stats.errors == _errors(rdata, m) and stats.answered == len(lat)
        assert stats.latency_max_ms == pytest.approx(lat.max(), abs=1e-3)
        assert stats.latency_avg_ms == pytest.approx(lat.mean(), abs=1e-3)
        assert stats.error_rate == pytest.approx(_errors(rdata, m) / m.sum(), abs=1e-6)
        assert 0.975 <= _rank(lat, stats.latency_p99_ms) <= 1.0  # type: ignore[arg-type]
        assert 0.45 <= _rank(lat, stats.latency_p50_ms) <= 0.55  # type: ignore[arg-type]
    shop = next(n for n in t.nodes if n.name == "shop")
    assert shop.requests_as_client == got[("shop", "db", 3306, "mysql")].requests + got[  # type: ignore[union-attr]
        ("shop", "cache", 6379, "redis")].requests  # type: ignore[union-attr]  # fmt: skip
    assert shop.project == "shop" and shop.bytes_as_client == 0


def test_topology_without_dedup_counts_both_agents(rstore: Any, rdata: RequestData) -> None:
    t = topology(rstore, TopologyRequest(**HOUR, level="ip", metric="requests", dedup=False), rdata.names())
    by_pair = {(e.source_name, e.target_name): e.requests.requests for e in t.edges}  # type: ignore[union-attr]
    assert by_pair[("shop", "db")] == 2 * int(rdata.mask("shop", "db").sum())
    assert t.edges[0].source == "10.1.0.10" and t.edges[0].target == "10.1.0.20"


def test_edge_topology_still_answers_without_request_fields(rstore: Any) -> None:
    t = topology(rstore, TopologyRequest(**HOUR, level="vm"))
    assert t.metric == "bytes" and t.stored_table.startswith("edge_") and t.edges == []


def test_compare_p99_ranks_the_edge_that_slowed_down_first(rstore: Any, rdata: RequestData) -> None:
    r = compare(
        rstore, CompareRequest(**WINDOW, baseline="before", level="vm", metric="latency_p99"), rdata.names()
    )
    assert r.stored_table == "request_1m" and r.metric == "latency_p99"
    top = r.edges[0]
    assert (top.source_name, top.target_name, top.server_port, top.l7_proto) == ("shop", "db", 3306, "mysql")
    a, b = rdata.mask("shop", "db", MID, T0 + 3600 * NS), rdata.mask("shop", "db", T0, MID)
    assert 0.975 <= _rank(_lat_ms(rdata, a), top.value) <= 1.0
    assert 0.975 <= _rank(_lat_ms(rdata, b), top.baseline_value) <= 1.0
    assert top.expected == top.baseline_value and top.abs_change == pytest.approx(
        top.value - top.baseline_value
    )
    assert top.status == "changed" and top.z is not None and top.z > 10
    assert top.bursts and top.bursts[0].start == "2025-11-21T10:30:00Z"
    for other in r.edges[1:]:
        assert abs(other.rel_change) < 0.5 and abs(other.abs_change) < abs(top.abs_change) / 10  # type: ignore[arg-type]
    assert r.endpoints[0].source_name == "db" and r.endpoints[0].target is None
    assert {e.source_name for e in r.endpoints} == {"db", "cache", "shop"}  # the servers


@pytest.mark.parametrize("metric", ["requests", "errors", "error_rate"])
def test_compare_counts_and_error_rate_equal_numpy(rstore: Any, rdata: RequestData, metric: str) -> None:
    r = compare(rstore, CompareRequest(**WINDOW, baseline="before", level="vm", metric=metric, limit=10),
                rdata.names())  # fmt: skip
    assert len(r.edges) == 3
    for c in r.edges:
        client, server = c.source_name, c.target_name
        a, b = rdata.mask(client, server, MID, T0 + 3600 * NS), rdata.mask(client, server, T0, MID)
        want = {
            "requests": (a.sum(), b.sum()),
            "errors": (_errors(rdata, a), _errors(rdata, b)),
            "error_rate": (_errors(rdata, a) / a.sum(), _errors(rdata, b) / b.sum()),
        }[metric]
        assert (c.value, c.baseline_value) == pytest.approx(want)
        assert c.expected == pytest.approx(want[1])  # A and the baseline are 30 min each


def test_request_series_per_minute_equal_numpy(rstore: Any, rdata: RequestData) -> None:
    w = Window(T0, T0 + 3600 * NS)
    s = selector_series(rstore, "request_1m", w, 60, Selector(client_ip="10.1.0.10", server_ip="10.1.0.20"),
                        rdata.names())  # fmt: skip
    m = rdata.mask("shop", "db")
    minute = (rdata.rec["req_ns"][m] - T0) // (60 * NS)
    lat = rdata.rec["latency_us"][m]
    answered = lat >= 0
    np.testing.assert_array_equal(s.metric("requests"), np.bincount(minute, minlength=60))
    np.testing.assert_array_equal(s.metric("errors"), np.bincount(minute, rdata.rec["status"][m] != 0, 60))
    sums = np.bincount(minute[answered], lat[answered], 60)
    counts = np.bincount(minute[answered], minlength=60)
    np.testing.assert_allclose(s.metric("latency_avg"), sums / counts / 1000.0, rtol=1e-9)
    maxima = np.zeros(60)
    np.maximum.at(maxima, minute[answered], lat[answered] / 1000.0)
    np.testing.assert_allclose(s.metric("latency_max"), maxima)
    p99 = s.metric("latency_p99")
    for i in range(60):
        x = lat[answered & (minute == i)] / 1000.0
        assert 0.95 <= _rank(x, p99[i]) <= 1.0
    assert s.valid("latency_p99").all() and s.valid("requests").all()


def test_backtest_p99_above_a_threshold(rstore: Any, rdata: RequestData) -> None:
    sig = Signature.model_validate(
        {"filter": {"vm": "db"}, "condition": {"metric": "latency_p99", "threshold": 15}}
    )
    r = backtest(rstore, sig, names=rdata.names())
    assert r.stored_table == "request_1m" and r.buckets == 60
    m = rdata.mask(server="db")
    minute = (rdata.rec["req_ns"][m] - T0) // (60 * NS)
    lat = rdata.rec["latency_us"][m]
    exact = np.array([np.percentile(lat[(minute == i) & (lat >= 0)], 99) / 1000.0 for i in range(60)])
    spans = runs(exact > 15)
    assert r.count == len(spans) == 1
    assert (r.occurrences[0].start, r.occurrences[0].end) == ("2025-11-21T10:30:00Z", "2025-11-21T11:00:00Z")
    assert r.matching_buckets == int((exact > 15).sum()) == 30


def test_backtest_without_requests_in_a_bucket_never_matches(rstore: Any, rdata: RequestData) -> None:
    sig = Signature.model_validate(
        {"filter": {"vm": "db"}, "condition": {"metric": "latency_avg", "op": "lt", "threshold": 1000}}
    )
    r = backtest(
        rstore, sig, time_from="2025-11-21T09:00:00Z", time_to="2025-11-21T11:00:00Z", names=rdata.names()
    )
    assert r.buckets == 60 and r.matching_buckets == 60  # the range is clipped to the stored rows


def _exact_percentiles(lat_us: np.ndarray) -> list[float]:
    lat = lat_us[lat_us >= 0]
    return [round(float(v) / 1000.0, 3) for v in np.percentile(lat, [50, 90, 99])]


def test_drill_slowest_and_error_codes_equal_a_numpy_groupby(rstore: Any, rdata: RequestData) -> None:
    r = drill(rstore, DrillRequest(**HOUR, target={"vm": "db"}), rdata.names())
    m = rdata.mask(server="db")
    res = rdata.rec["resource"][m]
    lat = rdata.rec["latency_us"][m]
    want = {}
    for name in np.unique(res):
        sel = res == name
        p50, p90, p99 = _exact_percentiles(lat[sel])
        want[name.decode()] = (int(sel.sum()), _errors(rdata, np.flatnonzero(m)[sel]), p50, p90, p99,
                               round(lat[sel].max() / 1000.0, 3))  # fmt: skip
    got = {s.resource: (s.stats.requests, s.stats.errors, s.stats.latency_p50_ms, s.stats.latency_p90_ms,
                        s.stats.latency_p99_ms, s.stats.latency_max_ms) for s in r.slowest}  # fmt: skip
    assert got == want
    assert [s.stats.latency_p99_ms for s in r.slowest] == sorted((w[4] for w in want.values()), reverse=True)
    assert all(s.role == "server" and s.l7_proto == "mysql" and s.server_port == 3306 for s in r.slowest)
    status, code = rdata.rec["status"][m], rdata.rec["code"][m]
    failed = status != 0
    keys, counts = np.unique(
        np.stack([status[failed].astype(np.int64), code[failed]]), axis=1, return_counts=True
    )
    names = {1: "client_error", 2: "server_error", 3: "timeout", 4: "unanswered"}
    assert {(e.status, e.code): e.count for e in r.error_codes} == {
        (names[int(s)], int(c)): int(n) for (s, c), n in zip(keys.T, counts, strict=True)
    }
    dup = next(e for e in r.error_codes if e.code == 1062)
    assert dup.error == "23000" and dup.resources == ["INSERT INTO audit VALUES (?)"]
    [role] = r.requests
    assert role.role == "server" and role.stats.requests == int(m.sum())
    assert [
        role.stats.latency_p50_ms,
        role.stats.latency_p90_ms,
        role.stats.latency_p99_ms,
    ] == _exact_percentiles(lat)


def test_drill_of_a_client_lists_its_requests_as_client(rstore: Any, rdata: RequestData) -> None:
    r = drill(
        rstore, DrillRequest(**HOUR, target={"vm": "shop"}, metric="latency_max", limit=3), rdata.names()
    )
    roles = {p.role: p.stats.requests for p in r.requests}
    assert roles == {
        "client": int(rdata.mask(client="shop").sum()),
        "server": int(rdata.mask(server="shop").sum()),
    }
    assert len(r.slowest) == 3 and r.metric == "latency_max"
    maxima = [s.stats.latency_max_ms for s in r.slowest]
    assert maxima == sorted(maxima, reverse=True)  # type: ignore[type-var]
    assert (
        r.slowest[0].role == "client" and r.slowest[0].l7_proto == "mysql"
    )  # the slow database, seen by shop


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: topology(s, TopologyRequest(**HOUR, metric="latency_p42")), "metric"),
        (lambda s: compare(s, CompareRequest(**WINDOW, metric="p99")), "metric"),
        (lambda s: drill(s, DrillRequest(**HOUR, target={"vm": "id:2"}, metric="bytes")), "metric"),
        (
            lambda s: topology(s, TopologyRequest(**HOUR, metric="latency_p99", filter={"proto": "tcp"})),
            "filter",
        ),
    ],
)
def test_bad_request_metrics_name_the_field_and_the_allowed(rstore: Any, call: Any, field: str) -> None:
    with pytest.raises(AnalysisError) as err:
        call(rstore)
    assert err.value.field == field
    if field == "metric":
        assert set(REQUEST_METRICS) <= set(err.value.allowed or ())


def test_signature_conditions_take_request_metrics() -> None:
    from cloudtap.server.analyse import parse_condition

    c = parse_condition("latency_p99>200")
    assert (c.metric, c.op, c.threshold) == ("latency_p99", "gt", 200)
    assert parse_condition("z(error_rate)>=4").test == "zscore"


def test_bursts_of_p99_find_the_slow_half_hour(rstore: Any, rdata: RequestData) -> None:
    from cloudtap.server.analyse import BurstRequest, detect_bursts

    body = {**WINDOW, "baseline": "before", "filter": {"vm": "db"}, "metric": "latency_p99", "k": 5}
    r = detect_bursts(rstore, BurstRequest.model_validate(body), rdata.names())
    assert r.stored_table == "request_1m" and [(b.start, b.end) for b in r.bursts] == [
        ("2025-11-21T10:30:00Z", "2025-11-21T11:00:00Z")
    ]


def test_request_metrics_on_a_store_without_requests(astore: Any) -> None:
    """The flow dataset holds no requests: every analysis answers empty, none fails."""
    a = {"time_from": "2026-11-20T01:55:00Z", "time_to": "2026-11-20T02:10:00Z"}
    assert topology(astore, TopologyRequest(**a, metric="latency_p99")).edges == []
    r = compare(astore, CompareRequest(**a, baseline="before", metric="latency_p99"))
    assert r.edges == r.endpoints == r.new_edges == [] and r.counts["edges"] == 0
    d = drill(astore, DrillRequest(**a, target={"vm": "id:1"}))
    assert d.slowest == d.error_codes == d.requests == [] and d.by_peer  # the flows are still there
    sig = Signature.model_validate({"condition": {"metric": "error_rate", "threshold": 0.1}})
    assert backtest(astore, sig).count == 0
