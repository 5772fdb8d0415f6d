"""Round trip: real captures metered and annotated like an agent, stored, and read back equal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from store_batches import EXAMPLE, MULTI_DAY, batch_of, endpoint_totals, hour_sums, metered, text

from cloudtap.meter.edges import EDGE_SUMS
from cloudtap.schema.flow import FLOW_COUNTERS
from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore


@pytest.fixture(scope="module")
def loaded(chdb_dsn: str, pcaps: Path) -> Iterator[tuple[ClickHouseStore, dict, dict]]:
    """One store (for the module) holding two agents' batches: the 2013 example capture and a multi-day one."""
    store = ClickHouseStore(chdb_dsn, database="roundtrip")
    try:
        store.migrate()
        a = batch_of(metered(pcaps, EXAMPLE), "hv-1")
        b = batch_of(metered(pcaps, MULTI_DAY), "hv-2")
        assert not store.insert(a, BatchKey("hv-1", 1)).duplicate
        assert not store.insert(b, BatchKey("hv-2", 1)).duplicate
        yield store, a, b
    finally:
        store.close()


def _sums(store: ClickHouseStore, table: str, columns: tuple[str, ...], agent: str) -> dict[str, float]:
    exprs = ", ".join(f"sum({c}) AS {c}" for c in columns)
    row = store.query_arrow(
        f"SELECT count() AS n, {exprs} FROM {table} WHERE agent_id = {{a:String}}", {"a": agent}
    ).to_pylist()[0]
    return row


def test_flow_records_round_trip(loaded: tuple[ClickHouseStore, dict, dict]) -> None:
    store, a, b = loaded
    for agent, batch in (("hv-1", a), ("hv-2", b)):
        flows = batch["flows"]
        got = _sums(store, "flow_log", FLOW_COUNTERS, agent)
        assert got["n"] == flows.num_rows > 0
        for name in FLOW_COUNTERS:
            assert got[name] == int(np.sum(flows[name].to_numpy())), name
        stored = store.query_arrow(
            f"SELECT flow_id, first_ns, last_ns, start_ns, {text('client_ip')} AS c, {text('server_ip')} AS s, "
            f"server_port, close_type, interface_name, vm_domain FROM flow_log WHERE agent_id = {{a:String}} "
            "ORDER BY flow_id, record_seq",
            {"a": agent},
        ).to_pydict()
        sent = flows.sort_by([("flow_id", "ascending"), ("record_seq", "ascending")]).to_pydict()
        for name in ("flow_id", "first_ns", "last_ns", "start_ns", "server_port", "close_type", "vm_domain"):
            assert stored[name] == sent[name], name  # ns times exact through DateTime64(9)
        assert stored["c"] == sent["client_ip"] and stored["s"] == sent["server_ip"]
        assert set(stored["interface_name"]) == {"vnet0"}


def test_old_capture_partitions_by_record_day(loaded: tuple[ClickHouseStore, dict, dict]) -> None:
    store, a, _ = loaded
    days = store.query_arrow(
        "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'flow_log' AND active ORDER BY partition"
    )["partition"].to_pylist()
    assert days[0] == "20130502"  # example.pcap was captured on 2013-05-02
    assert len(days) >= 3  # the multi-day capture spreads over several partitions


def test_edges_round_trip(loaded: tuple[ClickHouseStore, dict, dict]) -> None:
    store, a, b = loaded
    for table, kind in (("edge_1s", "edges_1s"), ("edge_1m", "edges_60s")):
        for agent, batch in (("hv-1", a), ("hv-2", b)):
            got = _sums(store, table, EDGE_SUMS, agent)
            assert got["n"] == batch[kind].num_rows
            for name in EDGE_SUMS:
                assert got[name] == pytest.approx(float(np.sum(batch[kind][name].to_numpy()))), (table, name)
    times = store.query_arrow("SELECT min(time_ns) AS t FROM edge_1m WHERE agent_id = 'hv-1'")["t"][0].as_py()
    assert times == int(np.min(a["edges_60s"]["time_ns"].to_numpy()))


@pytest.mark.parametrize(
    ("table", "kind"),
    [("endpoint_1s", "edges_1s"), ("endpoint_1m", "edges_60s"), ("endpoint_1h", "edges_60s")],
)
def test_endpoint_views_match_python(
    loaded: tuple[ClickHouseStore, dict, dict], table: str, kind: str
) -> None:
    store, a, b = loaded
    for agent, batch in (("hv-1", a), ("hv-2", b)):
        want = endpoint_totals(batch[kind])
        rows = store.query_arrow(
            f"SELECT {text('ip')} AS ip, sum(bytes_out) AS bytes_out, sum(bytes_in) AS bytes_in, "
            "sum(packets_out) AS packets_out, sum(packets_in) AS packets_in, sum(flows_as_client) AS flows_as_client, "
            "sum(flows_as_server) AS flows_as_server, sum(rtt_count) AS rtt_count, sum(rtt_sum_us) AS rtt_sum_us, "
            f"sum(retrans) AS retrans FROM {table} WHERE agent_id = {{a:String}} GROUP BY ip",
            {"a": agent},
        ).to_pylist()
        assert {r["ip"] for r in rows} == set(want)
        for r in rows:
            for name, value in want[r["ip"]].items():
                assert r[name] == pytest.approx(value), (table, r["ip"], name)


def test_hourly_edges_match_python(loaded: tuple[ClickHouseStore, dict, dict]) -> None:
    store, a, b = loaded
    for agent, batch in (("hv-1", a), ("hv-2", b)):
        want = hour_sums(batch["edges_60s"])
        rows = store.query_arrow(
            f"SELECT toUnixTimestamp(time) AS h, {text('client_ip')} AS c, {text('server_ip')} AS s, server_port, "
            "proto, sum(bytes_c2s + bytes_s2c) AS bytes, sum(flows_opened) AS flows FROM edge_1h "
            "WHERE agent_id = {a:String} GROUP BY h, c, s, server_port, proto",
            {"a": agent},
        ).to_pylist()
        got = {(r["h"], r["c"], r["s"], r["server_port"], r["proto"]): (r["bytes"], r["flows"]) for r in rows}
        assert got == want


def test_query_arrow_is_read_only(store: ClickHouseStore) -> None:
    with pytest.raises(ValueError, match="read-only"):
        store.query_arrow("DROP TABLE flow_log")
    assert store.query_arrow("SELECT {x:UInt8} + 1 AS y", {"x": 41})["y"][0].as_py() == 42
    assert store.query_arrow("EXISTS TABLE flow_log").num_rows == 1
