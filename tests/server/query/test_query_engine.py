"""The engine on a real chDB store: answers equal a pyarrow aggregation of the inserted rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from querydata import NS, SPAN, T0, Dataset, open_test_store

from cloudtap.server.query.engine import QueryEngine, QueryResult
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Query
from cloudtap.server.query.timespec import iso

MIN = 60 * NS


def run(store: Any, clock: int = T0 + SPAN, **body: Any) -> QueryResult:
    return QueryEngine(store, clock=lambda: clock).run(Query.model_validate(body))


def rows(result: QueryResult) -> list[dict[str, Any]]:
    return result.table.to_pylist()


def expected_sum(
    table: pa.Table, keys: list[str], exprs: dict[str, pa.ChunkedArray]
) -> dict[tuple, dict[str, Any]]:
    """Group ``table`` by ``keys`` summing ``exprs`` (name -> column): {key tuple: {name: sum}}."""
    t = table.select(keys)
    for name, col in exprs.items():
        t = t.append_column(name, col)
    grouped = t.group_by(keys).aggregate([(n, "sum") for n in exprs]).to_pylist()
    return {tuple(r[k] for k in keys): {n: r[f"{n}_sum"] for n in exprs} for r in grouped}


def total_bytes(t: pa.Table) -> pa.ChunkedArray:
    return pc.add(t["bytes_c2s"], t["bytes_s2c"])


@pytest.mark.parametrize("interval", ["1s", "1m", "1h"])
def test_top_edges_equal_pyarrow(store: Any, dataset: Dataset, interval: str) -> None:
    keys = ["client_ip", "server_ip", "server_port"]
    result = run(store, time_from="all", table="edges", interval=interval, group_by=keys,
                 metrics=["bytes", "packets_c2s", "rtt", "flows_failed"], limit=10_000)  # fmt: skip
    e = dataset.edges_1s
    want = expected_sum(e, keys, {"bytes": total_bytes(e), "packets_c2s": e["packets_c2s"],
                                  "rtt_sum": e["rtt_sum_us"], "rtt_count": e["rtt_count"],
                                  "flows_failed": e["flows_failed"]})  # fmt: skip
    got = {tuple(r[k] for k in keys): r for r in rows(result)}
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert g["bytes"] == w["bytes"] and g["packets_c2s"] == w["packets_c2s"]
        assert g["flows_failed"] == w["flows_failed"]
        if w["rtt_count"]:
            assert g["rtt"] == pytest.approx(w["rtt_sum"] / w["rtt_count"], rel=1e-9)
        else:
            assert g["rtt"] is None
    assert result.meta["stored_table"] == f"edge_{interval}"
    ordered = [r["bytes"] for r in rows(result)]
    assert ordered == sorted(ordered, reverse=True)


def test_top_limit_truncates(store: Any, dataset: Dataset) -> None:
    result = run(store, time_from="all", group_by=["client_ip"], metrics=["bytes"], limit=3)
    e = dataset.edges_1s
    want = sorted(expected_sum(e, ["client_ip"], {"b": total_bytes(e)}).items(), key=lambda kv: -kv[1]["b"])[
        :3
    ]
    assert [(r["client_ip"], r["bytes"]) for r in rows(result)] == [(k[0], v["b"]) for k, v in want]
    assert result.stats.truncated and result.stats.rows == 3


def test_endpoints_sum_both_sides_of_each_edge(store: Any, dataset: Dataset) -> None:
    e = dataset.edges_1s
    both = pa.concat_tables([
        pa.table({"ip": e["client_ip"], "bytes": total_bytes(e), "out": e["bytes_c2s"], "flows": e["flows_opened"]}),
        pa.table({"ip": e["server_ip"], "bytes": total_bytes(e), "out": e["bytes_s2c"], "flows": e["flows_opened"]}),
    ])  # fmt: skip
    want = expected_sum(both, ["ip"], {"bytes": both["bytes"], "out": both["out"], "flows": both["flows"]})
    for interval in ("1s", "1m", "1h"):
        result = run(store, time_from="all", table="endpoints", interval=interval, group_by=["ip"],
                     metrics=["bytes", "bytes_out", "flows"], limit=1000)  # fmt: skip
        got = {
            (r["ip"],): {"bytes": r["bytes"], "out": r["bytes_out"], "flows": r["flows"]}
            for r in rows(result)
        }
        assert got == want


def test_flow_metrics_equal_pyarrow(store: Any, dataset: Dataset) -> None:
    f = dataset.flows
    result = run(store, time_from="all", table="flows", group_by=["server_port"],
                 metrics=["bytes", "retrans", "flows", "flows_failed", "records", "rtt", "rtt_p95", "rtt_max",
                          "uniq(client_ip)", "bytes_mean"], limit=100)  # fmt: skip
    got = {r["server_port"]: r for r in rows(result)}
    ports = f["server_port"].to_numpy()
    total = total_bytes(f).to_numpy()
    retrans = f["retrans_c2s"].to_numpy().astype(np.int64) + f["retrans_s2c"].to_numpy()
    seq0 = f["record_seq"].to_numpy() == 0
    close = np.array(f["close_type"].to_pylist())
    rc, rs = f["rtt_client_us"].to_numpy(), f["rtt_server_us"].to_numpy()
    rtt_ok = (rc >= 0) & (rs >= 0) & seq0
    clients = np.array(f["client_ip"].to_pylist())
    assert set(got) == set(ports.tolist())
    for port, g in got.items():
        m = ports == port
        assert g["bytes"] == total[m].sum()
        assert g["retrans"] == retrans[m].sum()
        assert g["flows"] == (m & seq0).sum()
        assert (
            g["flows_failed"] == (m & np.isin(close, ["syn_unanswered", "server_refused", "half_open"])).sum()
        )
        assert g["records"] == m.sum()
        assert g["bytes_mean"] == pytest.approx(total[m].mean())
        rtts = (rc + rs)[m & rtt_ok]
        assert g["rtt"] == pytest.approx(rtts.mean())
        assert g["rtt_max"] == pytest.approx(rtts.max())
        assert g["rtt_p95"] == pytest.approx(np.percentile(rtts, 95), rel=0.03)  # t-digest: approximate
        assert g["uniq_client_ip"] == len(set(clients[m]))


def test_filters_equal_pyarrow(store: Any, dataset: Dataset) -> None:
    f = dataset.flows
    clients = np.array(f["client_ip"].to_pylist())
    ports = f["server_port"].to_numpy()
    proto = f["proto"].to_numpy()
    total = total_bytes(f).to_numpy()
    cases = [
        ([{"dim": "client_ip", "op": "prefix", "value": "10.0.1.0/24"}], np.char.startswith(clients, "10.0.1.")),
        ([{"dim": "proto", "value": "udp"}], proto == 17),
        ([{"dim": "server_port", "op": "in", "value": [80, 443]}, {"dim": "proto", "op": "ne", "value": "udp"}],
         np.isin(ports, [80, 443]) & (proto != 17)),
        ([{"dim": "server_port", "op": "not_in", "value": [53]}], ports != 53),
        ([{"dim": "client_ip", "value": "fd00::1"}], clients == "fd00::1"),
        ([{"dim": "client_ip", "op": "prefix", "value": "fd00::/64"}], np.char.startswith(clients, "fd00::")),
        ([{"dim": "bytes", "op": "gt", "value": 300_000}], total > 300_000),
        ([{"dim": "agent_id", "value": "agent-b"}], np.array(f["agent_id"].to_pylist()) == "agent-b"),
    ]  # fmt: skip
    for filters, mask in cases:
        result = run(store, time_from="all", table="flows", metrics=["bytes", "records"], filters=filters)
        (row,) = rows(result)
        assert (row["bytes"], row["records"]) == (total[mask].sum(), mask.sum()), filters


def test_odd_text_values_are_bound_safely(store: Any) -> None:
    base = rows(run(store, time_from="all", table="flows", metrics=["records"],
                    filters=[{"dim": "vm_domain", "value": "vm-1"}]))[0]["records"]  # fmt: skip
    assert base > 0
    for odd in [
        "vm-1' OR '1'='1",
        "a\\b",
        'q"uote',
        "ünïcødé ✓",
        "x'); DROP TABLE cloudtap.flow_log; --",
        "{p0:String}",
    ]:
        got = run(store, time_from="all", table="flows", metrics=["records"],
                  filters=[{"dim": "vm_domain", "op": "in", "value": [odd, "vm-1"]}])  # fmt: skip
        assert rows(got)[0]["records"] == base, odd
    assert rows(run(store, time_from="all", table="flows", metrics=["records"]))[0]["records"] == 3000


def test_series_is_filled_and_equals_pyarrow(store: Any, dataset: Dataset) -> None:
    step = 5 * MIN
    start, end = T0 - 2 * step, T0 + 4 * step  # two empty buckets before the data
    result = run(store, time_from=start, time_to=end, metrics=["bytes", "bytes_rate", "rtt"], step="5m")
    assert result.meta["stored_table"] == "edge_1s"  # the precision of the range ends
    # whole minutes from the 1 m rows where they exist (from T0), the empty minutes before from 1 s
    assert result.meta["read"][-1] == {"stored_table": "edge_1m", "time_from": iso(T0), "time_to": iso(end)}
    e = dataset.edges_1s
    t = e["time_ns"].to_numpy()
    total = total_bytes(e).to_numpy()
    got = rows(result)
    assert [r["time"].timestamp() for r in got] == [(start + i * step) / NS for i in range(6)]
    for i, r in enumerate(got):
        lo = start + i * step
        m = (t >= lo) & (t < lo + step)
        assert r["bytes"] == total[m].sum()
        assert r["bytes_rate"] == pytest.approx(total[m].sum() / 300)
        if not m.any():
            assert r["rtt"] is None
    assert got[0]["bytes"] == 0 and got[2]["bytes"] > 0


def test_grouped_series_keeps_top_groups(store: Any, dataset: Dataset) -> None:
    result = run(store, time_from="all", metrics=["bytes"], step="30m", group_by=["server_ip"], top_groups=2)
    e = dataset.edges_1s
    per_server = expected_sum(e, ["server_ip"], {"b": total_bytes(e)})
    top2 = {k[0] for k, _ in sorted(per_server.items(), key=lambda kv: -kv[1]["b"])[:2]}
    got = rows(result)
    assert {r["server_ip"] for r in got} == top2 and len(got) == 2 * 4
    for r in got:
        m = (pc.equal(e["server_ip"], r["server_ip"]).to_numpy()
             & (e["time_ns"].to_numpy() // (1800 * NS) * 1800 == int(r["time"].timestamp())))  # fmt: skip
        assert r["bytes"] == total_bytes(e).to_numpy()[m].sum()


def test_raw_flows_newest_first(store: Any, dataset: Dataset) -> None:
    result = run(
        store, time_from="all", table="flows", limit=5, columns=["first_ns", "flow_id", "client_mac"]
    )
    f = dataset.flows.sort_by([("first_ns", "descending")]).slice(0, 5)
    assert [r["flow_id"] for r in rows(result)] == f["flow_id"].to_pylist()
    assert rows(result)[0]["client_mac"].startswith("52:54:00:00:00:")
    assert result.stats.truncated


def test_ranges_all_clamped_and_relative(store: Any, dataset: Dataset) -> None:
    everything = run(store, time_from="all", table="edges", metrics=["bytes"])
    assert everything.meta["time_from"] == "2024-03-01T00:00:00Z"
    last = max(dataset.edges_1s["time_ns"].to_pylist())
    assert everything.meta["time_to"] == iso(last + NS)  # the last 1 s row's end
    wide = run(store, time_from="1970-01-01T00:00:00Z", time_to="2100-01-01T00:00:00Z", table="flows",
               metrics=["packets"])  # fmt: skip
    f = dataset.flows
    assert rows(wide)[0]["packets"] == pc.sum(pc.add(f["packets_c2s"], f["packets_s2c"])).as_py()
    assert wide.meta["time_from"].startswith("2024-03-01T00:00")  # clamped to the data
    recent = run(store, clock=T0 + 30 * MIN, time_from="-10m", metrics=["bytes"], table="edges")
    t = dataset.edges_1s["time_ns"].to_numpy()
    m = (t >= T0 + 20 * MIN) & (t < T0 + 30 * MIN)
    assert rows(recent)[0]["bytes"] == total_bytes(dataset.edges_1s).to_numpy()[m].sum()
    assert recent.meta["stored_table"] == "edge_1s"


def test_no_data_in_range(store: Any) -> None:
    empty = run(store, time_from="2020-01-01T00:00:00Z", time_to="2020-01-01T01:00:00Z",
                group_by=["client_ip"], metrics=["bytes"])  # fmt: skip
    assert empty.table.num_rows == 0 and empty.table.column_names == ["client_ip", "bytes"]
    listing = run(store, clock=T0 + 10 * SPAN, time_from="-1h", table="flows")
    assert listing.table.num_rows == 0


class _WideData(QueryEngine):
    def data_bounds(self, logical: str) -> dict[str, tuple[int, int]]:
        return {"edge_1s": (T0, T0 + 3 * 86400 * NS), "edge_1m": (T0, T0 + 3 * 86400 * NS)}  # 3 days of rows


def test_too_wide_even_after_clamping(store: Any) -> None:
    with pytest.raises(QueryError, match="wider than 2d") as info:
        _WideData(store).run(Query(time_from="all", interval="1s", metrics=["bytes"]))
    assert info.value.field == "time_from"
    auto = _WideData(store).run(Query(time_from="all", metrics=["bytes"]))  # coarser rollup instead
    assert auto.meta["stored_table"] == "edge_1m"
    # the real data spans 2 h: a 3-day window at 1 s is clamped to it, not refused
    ok = run(store, time_from=T0 - 3 * 86400 * NS, time_to=T0 + SPAN, interval="1s", metrics=["bytes"])
    assert ok.meta["time_from"] == "2024-03-01T00:00:00Z"


class _LongFlowLog(QueryEngine):
    def data_bounds(self, logical: str) -> dict[str, tuple[int, int]]:
        return {"flow_log": (T0, T0 + 40 * 86400 * NS)}  # an imported capture spanning 40 days


def test_all_flow_records_whatever_the_span(store: Any) -> None:
    """``--since all`` means the stored data: records spanning more than the 31-day cap are listed, not refused."""
    listed = _LongFlowLog(store).run(Query(table="flows", time_from="all", limit=5))
    assert listed.table.num_rows == 5 and listed.meta["stored_table"] == "flow_log"
    with pytest.raises(QueryError, match="wider than 31d"):  # an explicit range that wide is still refused
        _LongFlowLog(store).run(Query(table="flows", time_from=T0, time_to=T0 + 40 * 86400 * NS))


def test_json_and_arrow_forms(store: Any) -> None:
    result = run(store, time_from="all", metrics=["bytes", "rtt"], step="1h")
    body = result.to_json()
    assert body["columns"] == ["time", "bytes", "rtt"]
    assert body["rows"][0][0] == "2024-03-01T00:00:00Z"
    assert [c["role"] for c in body["column_info"]] == ["time", "metric", "metric"]
    assert body["column_info"][1]["unit"] == "bytes"
    back = QueryResult.from_arrow_ipc(result.to_arrow_ipc())
    assert back.table.equals(result.table)
    assert back.stats == result.stats and back.meta == result.meta
    assert [c.name for c in back.columns] == body["columns"]


def test_open_ranges_prefer_rollups_that_hold_rows(
    tmp_path_factory: pytest.TempPathFactory, dataset: Dataset
) -> None:
    from cloudtap.server.store.base import BatchKey

    only_1m = open_test_store(str(tmp_path_factory.getbasetemp() / "chdb"), None, "query_tests_1m_only")
    try:
        only_1m.insert(
            {"edges_60s": dataset.edges_60s}, BatchKey("query-tests", 2)
        )  # agents without 1 s edges
        result = run(only_1m, time_from="all", metrics=["bytes"])
        assert result.meta["stored_table"] == "edge_1m"
        assert rows(result)[0]["bytes"] == pc.sum(total_bytes(dataset.edges_1s)).as_py()
        assert result.meta["time_to"] == "2024-03-01T02:00:00Z"  # the last minute's end, not the hour's
    finally:
        only_1m.close()
