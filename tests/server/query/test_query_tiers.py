"""Wide ranges read whole hours / minutes from the rollups: which tables answer, and that they agree with 1 s."""

from __future__ import annotations

from typing import Any

import pytest
from querydata import NS, T0

from cloudtap.server.query.catalog import stored_tables
from cloudtap.server.query.engine import QueryEngine, QueryResult
from cloudtap.server.query.model import Query
from cloudtap.server.query.tiers import Segment, coarser_tiers, plan_segments

MIN, HOUR = 60 * NS, 3600 * NS
T = stored_tables()
EVERYWHERE = {name: (0, 2**62) for name in T}


def q(**body: Any) -> Query:
    return Query.model_validate({"time_from": "all", **body})


def spans(segments: list[Segment]) -> list[tuple[str, int, int]]:
    return [(s.table.name, (s.time_from_ns - T0) // NS, (s.time_to_ns - T0) // NS) for s in segments]


def test_plan_covers_the_range_coarsest_first() -> None:
    base, coarse = T["edge_1s"], coarser_tiers(q(metrics=["bytes"]), T["edge_1s"])
    assert [t.name for t in coarse] == ["edge_1h", "edge_1m"]
    t0, t1 = T0 + 10 * MIN + 30 * NS, T0 + 3 * HOUR + 30 * MIN + 30 * NS
    assert spans(plan_segments(base, coarse, t0, t1, EVERYWHERE)) == [
        ("edge_1s", 630, 660), ("edge_1m", 660, 3600), ("edge_1h", 3600, 3 * 3600),
        ("edge_1m", 3 * 3600, 3 * 3600 + 1800), ("edge_1s", 3 * 3600 + 1800, 3 * 3600 + 1830),
    ]  # fmt: skip
    # a rollup is used only where it holds rows: 1 m rows end at 02:15, the hour rollup has none
    bounds = {"edge_1s": EVERYWHERE["edge_1s"], "edge_1m": (T0, T0 + 2 * HOUR + 15 * MIN)}
    assert spans(plan_segments(base, coarse, t0, t1, bounds)) == [
        ("edge_1s", 630, 660), ("edge_1m", 660, 2 * 3600 + 900), ("edge_1s", 2 * 3600 + 900, 3 * 3600 + 1830),
    ]  # fmt: skip
    # too short for any whole coarse interval: the base alone
    assert spans(plan_segments(base, coarse, T0 + 5 * NS, T0 + 50 * NS, EVERYWHERE)) == [("edge_1s", 5, 50)]


def test_which_rollups_can_answer() -> None:
    assert [t.name for t in coarser_tiers(q(metrics=["bytes"], group_by=["interface"]), T["edge_1s"])] == [
        "edge_1m"
    ]  # the hourly rollup has no interface
    assert [t.name for t in coarser_tiers(q(metrics=["bytes"], step="5m"), T["edge_1s"])] == ["edge_1m"]
    assert coarser_tiers(q(metrics=["bytes"], interval="1s"), T["edge_1s"]) == []  # asked for 1 s
    assert coarser_tiers(q(metrics=["bytes_p95"], table="flows"), T["flow_log"]) == []
    assert coarser_tiers(q(table="edges"), T["edge_1s"]) == []  # raw listing
    assert [t.name for t in coarser_tiers(q(table="endpoints", group_by=["ip"]), T["endpoint_1m"])] == [
        "endpoint_1h"
    ]


def run(store: Any, **body: Any) -> QueryResult:
    return QueryEngine(store, clock=lambda: T0 + 3 * HOUR).run(q(**body))


def table_rows(result: QueryResult) -> list[dict[str, Any]]:
    out = result.table.to_pylist()
    for r in out:
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = round(v, 6)
    return out


#: Data covers 00:00-02:00: the hour 01:00-02:00 is whole inside, the rest is read finer.
RANGE = {"time_from": T0 + 10 * MIN + 30 * NS, "time_to": T0 + 2 * HOUR + 50 * MIN + 15 * NS}


@pytest.mark.parametrize(
    "body",
    [
        {"group_by": ["client_ip", "server_ip", "server_port"], "metrics": ["bytes", "rtt", "flows_failed"]},
        {"group_by": ["server_ip"], "metrics": ["bytes_rate", "uniq(client_ip)", "packets_c2s"],
         "filters": [{"dim": "client_ip", "op": "prefix", "value": "10.0.0.0/16"},
                     {"dim": "server_port", "op": "in", "value": [5432, 443, 80]}]},
        {"table": "endpoints", "group_by": ["ip"], "metrics": ["bytes_out", "flows", "rtt"]},
        {"metrics": ["bytes", "retrans"], "step": "1h"},
    ],
)  # fmt: skip
def test_unaligned_range_from_rollups_equals_the_1s_table(store: Any, body: dict[str, Any]) -> None:
    fast = run(store, **RANGE, **body, limit=10_000)
    fine = run(store, **RANGE, **body, interval="1s", limit=10_000)
    logical = body.get("table", "edges")
    prefix = "edge" if logical == "edges" else "endpoint"
    read = [r["stored_table"] for r in fast.meta["read"]]
    if "step" in body:  # 1 h buckets: whole hours from the hourly rollup, the partial ones finer
        assert f"{prefix}_1h" in read
    else:
        # 00:10:30-00:11 at 1 s, whole minutes to 01:00, the hour 01:00-02:00, then 1 s (no minute rows
        # after 02:00: the rollups end with the data)
        assert read == [f"{prefix}_1s", f"{prefix}_1m", f"{prefix}_1h", f"{prefix}_1s"]
        assert fast.meta["read"][2] == {"stored_table": f"{prefix}_1h", "time_from": "2024-03-01T01:00:00Z",
                                        "time_to": "2024-03-01T02:00:00Z"}
    assert [r["stored_table"] for r in fine.meta["read"]] == [f"{prefix}_1s"]
    assert fast.table.num_rows > 0
    assert table_rows(fast) == table_rows(fine)


def test_aligned_range_reads_the_hourly_rollup_only(store: Any) -> None:
    body = {"time_from": T0, "time_to": T0 + 2 * HOUR, "group_by": ["client_ip", "server_ip"],
            "metrics": ["bytes", "flows"], "limit": 10_000}  # fmt: skip
    fast = run(store, **body)
    assert fast.meta["read"] == [
        {"stored_table": "edge_1h", "time_from": "2024-03-01T00:00:00Z", "time_to": "2024-03-01T02:00:00Z"}
    ]
    assert fast.meta["stored_table"] == "edge_1s"  # the precision of the range ends
    assert table_rows(fast) == table_rows(run(store, **body, interval="1s"))
    assert table_rows(fast) == table_rows(run(store, **body, interval="1m"))


def test_names_missing_from_the_hourly_rollup_fall_back_to_minutes(store: Any) -> None:
    body = {**RANGE, "group_by": ["interface"], "metrics": ["bytes"]}
    fast = run(store, **body)
    assert {r["stored_table"] for r in fast.meta["read"]} == {"edge_1s", "edge_1m"}
    assert table_rows(fast) == table_rows(run(store, **body, interval="1s"))
