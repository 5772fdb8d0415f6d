"""The SQL builder: catalog-checked names, bound values, table and interval choice, bounds."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtap.server.query.catalog import MAX_RANGE_NS, candidates, stored_tables
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Query
from cloudtap.server.query.sql import MAX_POINTS, compile_query

NS = 1_000_000_000
T0 = 1_709_251_200 * NS
HOUR = 3600 * NS


def build(t1: int = T0 + HOUR, **body: object):  # type: ignore[no-untyped-def]
    body.setdefault("time_from", "x")  # the range is passed resolved
    return compile_query(Query.model_validate(body), T0, t1)


def placeholders(sql: str) -> set[str]:
    return set(re.findall(r"\{(p\d+):[A-Za-z0-9]+\}", sql))


def test_top_query_sql_and_parameters() -> None:
    c = build(group_by=["client_ip", "server_port"], metrics=["bytes", "rtt"],
              filters=[{"dim": "server_port", "value": 5432}, {"dim": "client_ip", "op": "prefix", "value": "10.0.0.0/8"}])  # fmt: skip
    assert c.table.name == "edge_1s"  # one hour: the 1 s rollup
    assert "FROM `cloudtap`.`edge_1s`" in c.sql
    assert "GROUP BY `client_ip`, `server_port`" in c.sql
    assert "sum((bytes_c2s + bytes_s2c)) AS _m0" in c.sql
    assert "sum(rtt_sum_us) / nullIf(sum(rtt_count), 0) AS _m1" in c.sql
    assert "ORDER BY _m0 DESC" in c.sql and c.sql.endswith("LIMIT 101")
    assert placeholders(c.sql) == set(c.parameters)
    assert sorted(c.parameters.values(), key=str) == sorted(
        [T0 // NS, (T0 + HOUR) // NS, 5432, "::ffff:10.0.0.0", "::ffff:10.255.255.255"], key=str
    )
    assert [col.name for col in c.columns] == ["client_ip", "server_port", "bytes", "rtt"]


def test_values_never_enter_the_sql_text() -> None:
    evil = "x'); DROP TABLE cloudtap.flow_log; --"
    c = build(table="flows", group_by=["agent_id"], metrics=["bytes"],
              filters=[{"dim": "agent_id", "value": evil}, {"dim": "close_type", "op": "prefix", "value": evil},
                       {"dim": "vm_domain", "op": "in", "value": [evil, "b"]}])  # fmt: skip
    assert evil not in c.sql and "DROP" not in c.sql
    assert list(c.parameters.values()).count(evil) == 3


@given(
    st.text(
        st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_characters="\x7f"),
        min_size=1,
        max_size=40,
    )
)
@settings(max_examples=200, deadline=None)
def test_any_text_value_is_bound(value: str) -> None:
    c = build(
        table="flows", metrics=["bytes"], filters=[{"dim": "interface_name", "op": "ne", "value": value}]
    )
    assert c.parameters[max(c.parameters)] == value
    sql_without_params = re.sub(r"\{p\d+:[A-Za-z0-9]+\}", "", c.sql)
    assert sql_without_params.count("'") % 2 == 0  # only the catalog's own literals are quoted


@pytest.mark.parametrize(
    ("body", "field", "allowed_has"),
    [
        ({"group_by": ["nope"]}, "group_by", "client_ip"),
        ({"metrics": ["nope"], "table": "edges"}, "metrics", "bytes"),
        ({"filters": [{"dim": "nope", "value": 1}], "table": "edges"}, "filters", "server_port"),
        ({"metrics": [{"name": "nope", "agg": "uniq"}], "table": "endpoints"}, "metrics", "ip"),
        ({"columns": ["nope"], "table": "flows"}, "columns", "bytes_c2s"),
        ({"metrics": ["bytes"], "order_by": ["nope"]}, "order_by", "bytes"),
    ],
)
def test_unknown_names_are_rejected_with_the_allowed_ones(body: dict, field: str, allowed_has: str) -> None:
    with pytest.raises(QueryError) as info:
        build(**body)
    assert info.value.field == field
    assert info.value.allowed is not None and allowed_has in info.value.allowed
    assert "nope" in str(info.value)


def test_auto_table_picks_edges_then_flows() -> None:
    assert build(metrics=["bytes"], group_by=["server_ip"]).table.logical == "edges"
    assert build(metrics=["bytes"], group_by=["client_port"]).table.logical == "flows"
    assert build(metrics=["rtt_p95"]).table.logical == "flows"
    assert build(metrics=["bytes"], filters=[{"dim": "close_type", "value": "fin"}]).table.logical == "flows"
    assert build(metrics=["bytes"], group_by=["ip"]).table.logical == "endpoints"
    assert build().table.logical == "edges" and build().columns[0].name == "time"  # raw edges listing


def test_percentiles_only_on_flows() -> None:
    with pytest.raises(QueryError) as info:
        build(table="edges", metrics=["rtt_p95"])
    assert "need table flows" in str(info.value) and info.value.allowed == ["mean"]
    c = build(table="flows", metrics=["rtt_p95", "bytes_p50", "packets_max", "bytes_mean"])
    assert "quantileTDigestIf(0.95)((rtt_client_us + rtt_server_us), rtt_client_us >= 0" in c.sql
    assert "quantileTDigestIf(0.5)((bytes_c2s + bytes_s2c), 1)" in c.sql
    assert "maxIfOrNull((packets_c2s + packets_s2c), 1)" in c.sql


def test_interval_choice_by_range_and_step() -> None:
    day, week = 24 * HOUR, 7 * 24 * HOUR
    assert build(T0 + HOUR, metrics=["bytes"]).table.name == "edge_1s"
    assert build(T0 + day, metrics=["bytes"]).table.name == "edge_1m"
    assert build(T0 + 30 * day, metrics=["bytes"]).table.name == "edge_1h"
    # a step caps the interval; the range still sets the precision of its ends (the engine then reads
    # whole minutes / hours from the coarser rollups, see test_query_tiers.py)
    assert build(T0 + HOUR, metrics=["bytes"], step="1m").table.name == "edge_1s"
    assert build(T0 + day, metrics=["bytes"], step="1m").table.name == "edge_1m"
    assert build(T0 + day, metrics=["bytes"], step="90s").table.name == "edge_1s"
    assert build(T0 + 5 * day, metrics=["bytes"], step="1m").table.name == "edge_1m"
    assert build(T0 + week + HOUR, metrics=["bytes"], step="1h").table.name == "edge_1h"
    assert build(T0 + 30 * day, metrics=["bytes"], group_by=["interface"], step="1h").table.name == "edge_1m"
    assert build(T0 + HOUR, metrics=["bytes"], interval="1h").table.name == "edge_1h"
    assert build(T0 + 30 * day, table="endpoints", metrics=["bytes"], step="1h").table.name == "endpoint_1h"
    with pytest.raises(QueryError, match="not kept at interval 1h"):
        build(metrics=["bytes"], group_by=["interface"], interval="1h")
    with pytest.raises(QueryError, match="not a multiple"):
        build(metrics=["bytes"], interval="1m", step="30s")
    with pytest.raises(QueryError, match="interval applies"):
        build(table="flows", interval="1m", metrics=["bytes"])


def test_ranges_and_steps_are_bounded() -> None:
    with pytest.raises(QueryError) as info:
        build(T0 + MAX_RANGE_NS["flow_log"] + NS, table="flows", metrics=["bytes"])
    assert info.value.field == "time_from"
    with pytest.raises(QueryError, match="wider"):
        build(T0 + MAX_RANGE_NS["edge_1s"] + NS, interval="1s", metrics=["bytes"])
    with pytest.raises(QueryError, match="buckets"):
        build(T0 + (MAX_POINTS + 1) * NS, metrics=["bytes"], step="1s")
    with pytest.raises(QueryError, match="between 1s and 1d"):
        build(metrics=["bytes"], step="2d", table="flows")
    with pytest.raises(QueryError, match="after"):
        build(T0, metrics=["bytes"])


def test_series_sql() -> None:
    c = build(metrics=["bytes", "bytes_rate"], step="5m")
    assert "intDiv(toInt64(toUnixTimestamp(`time`)), 300) * 300" in c.sql
    assert "/ 300.0 AS _m1" in c.sql  # rate: per second of the bucket
    assert c.fill and c.step_ns == 300 * NS and c.limit == 10_000
    g = build(metrics=["bytes"], step="5m", group_by=["server_ip"], top_groups=3)
    assert not g.fill
    assert "(`server_ip`) IN (SELECT `server_ip` FROM" in g.sql and "LIMIT 3)" in g.sql
    assert "ORDER BY _t ASC, _d0 ASC" in g.sql


def test_rate_without_step_divides_by_the_range() -> None:
    c = build(T0 + 2 * HOUR, metrics=["bytes_rate"])
    assert "/ 7200.0 AS _m0" in c.sql


@pytest.mark.parametrize(
    ("flt", "expected_sql", "params"),
    [
        ({"dim": "client_ip", "value": "10.1.2.3"}, "`client_ip` = toIPv6({p2:String})", ["::ffff:10.1.2.3"]),
        ({"dim": "client_ip", "value": "fd00::1", "op": "ne"}, "`client_ip` != toIPv6({p2:String})", ["fd00::1"]),
        ({"dim": "server_ip", "op": "prefix", "value": "fd00::/16"},
         "`server_ip` BETWEEN toIPv6({p2:String}) AND toIPv6({p3:String})", ["fd00::", "fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]),
        ({"dim": "proto", "value": "tcp"}, "`proto` = {p2:Int64}", [6]),
        ({"dim": "proto", "op": "in", "value": ["udp", 1]}, "`proto` IN ({p2:Int64}, {p3:Int64})", [17, 1]),
        ({"dim": "server_port", "op": "gt", "value": "1024"}, "`server_port` > {p2:Int64}", [1024]),
        ({"dim": "client_mac", "value": "52:54:00:00:00:0A"}, "`client_mac` = {p2:UInt64}", [0x52540000000A]),
        ({"dim": "vm_domain", "op": "prefix", "value": "web-"}, "startsWith(`vm_domain`, {p2:String})", ["web-"]),
        ({"dim": "bytes", "op": "gt", "value": 1000}, "(bytes_c2s + bytes_s2c) > {p2:Int64}", [1000]),
        ({"dim": "rtt_client_us", "op": "ge", "value": 2.5}, "`rtt_client_us` >= {p2:Float64}", [2.5]),
    ],
)  # fmt: skip
def test_filter_sql(flt: dict, expected_sql: str, params: list) -> None:
    c = build(table="flows", metrics=["bytes"], filters=[flt])
    assert expected_sql in c.sql
    assert list(c.parameters.values())[2:] == params


@pytest.mark.parametrize(
    "flt",
    [
        {"dim": "client_ip", "value": "10.0.0.300"},
        {"dim": "client_ip", "value": "10.0.0.0/8"},
        {"dim": "client_ip", "op": "prefix", "value": "10.0.0.0/33"},
        {"dim": "server_port", "value": "http"},
        {"dim": "server_port", "value": -1},
        {"dim": "server_port", "value": 2**64},
        {"dim": "server_port", "op": "prefix", "value": 80},
        {"dim": "proto", "value": "tcpx"},
        {"dim": "client_mac", "value": "52:54:00"},
        {"dim": "bytes", "value": "lots"},
        {"dim": "bytes", "op": "prefix", "value": "1"},
    ],
)
def test_bad_filter_values_are_rejected(flt: dict) -> None:
    with pytest.raises(QueryError) as info:
        build(table="flows", metrics=["bytes"], filters=[flt])
    assert info.value.field == "filters"


def test_measure_filters_only_on_flows() -> None:
    with pytest.raises(QueryError):
        build(table="edges", metrics=["bytes"], filters=[{"dim": "bytes", "op": "gt", "value": 1}])


def test_raw_listing() -> None:
    c = build(
        table="flows", columns=["first", "client_ip", "client_mac", "bytes_c2s"], order_by=["bytes_c2s"]
    )
    assert c.sql.startswith("SELECT `first` AS _c0, replaceRegexpOne(IPv6NumToString(client_ip)")
    assert "MACNumToString(client_mac) AS _c2" in c.sql
    assert "ORDER BY _c3 DESC" in c.sql
    r = build(table="edges", interval="1h")
    assert "FROM `cloudtap`.`edge_1h` FINAL" in r.sql and "ORDER BY `time` DESC" in r.sql
    assert "toDateTime64(`time`, 0, 'UTC') AS _c0" in r.sql


def test_every_metric_and_aggregation_compiles() -> None:
    for table in stored_tables().values():
        for metric in table.metrics.values():
            for agg in metric.aggs:
                agg = "p90" if agg == "pXX" else agg
                c = compile_query(Query(time_from="x", table=table.logical, interval=table.interval,
                                        metrics=[{"name": metric.name, "agg": agg}]), T0, T0 + HOUR)  # fmt: skip
                assert c.table is table and placeholders(c.sql) == set(c.parameters)


def test_catalog_follows_the_ddl() -> None:
    for logical in ("flows", "edges", "endpoints"):
        for table in candidates(logical):
            for dim in table.dimensions.values():
                assert dim.column in table.columns
            for metric in table.metrics.values():
                assert all(c in table.columns for c in metric.columns)
    flow_log = stored_tables()["flow_log"]
    assert {"client_project_id", "server_vm_id", "close_type", "agent_id"} <= set(flow_log.dimensions)
    assert {"bytes", "rtt", "flows", "retrans"} <= set(flow_log.metrics)
    assert "project_id" in stored_tables()["endpoint_1m"].dimensions
    assert "interface" not in stored_tables()["edge_1h"].dimensions  # the hourly rollup drops it
    assert not {"first", "time", "bytes_c2s", "inserted_at"} & set(flow_log.dimensions)
