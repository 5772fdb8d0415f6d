"""Retention: TTL by ingest time (old captures survive), TTL changes, and the disk budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from store_batches import EXAMPLE, MULTI_DAY, NS, batch_of, metered

from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore
from cloudtap.server.store.ddl import TABLES
from cloudtap.server.store.retention import TIER_ORDER, RetentionPolicy

ONE_DAY = RetentionPolicy(ttl_days={name: 1 for name in ("flow_log", "edge_1s", "edge_1m", "endpoint_1s",
                                                           "endpoint_1m", "edge_1h", "endpoint_1h")})  # fmt: skip
StoreFactory = Callable[..., ClickHouseStore]
RAW = ("flow_log", "edge_1s", "edge_1m", "endpoint_1s", "endpoint_1m", "edge_1h", "endpoint_1h")
REQUEST_TABLES = ("request_log", "request_1s", "request_1m", "request_1h")


def _rows(store: ClickHouseStore) -> dict[str, int]:
    return {t: store.query_arrow(f"SELECT count() AS n FROM {t}")["n"][0].as_py() for t in RAW}


def _optimize(store: ClickHouseStore) -> None:
    for table in RAW:
        store.command(f"OPTIMIZE TABLE {table} FINAL")


def test_an_imported_2013_capture_outlives_a_one_day_ttl(open_store: StoreFactory, pcaps: Path) -> None:
    store = open_store(retention=ONE_DAY)
    store.insert(batch_of(metered(pcaps, EXAMPLE), "import"), BatchKey("import", 1))
    before = _rows(store)
    assert before["flow_log"] > 0 and all(before.values())
    _optimize(store)  # TTL merges run now: rows from 2013 are not expired, they arrived today
    assert store.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py() == before["flow_log"]
    assert store.query_arrow("SELECT toYear(min(first)) AS y FROM flow_log")["y"][0].as_py() == 2013
    for table in RAW:
        assert store.query_arrow(f"SELECT count() AS n FROM {table}")["n"][0].as_py() > 0, table


def test_rows_that_arrived_before_the_ttl_are_deleted(open_store: StoreFactory, pcaps: Path) -> None:
    store = open_store(retention=ONE_DAY)
    store.insert(batch_of(metered(pcaps, EXAMPLE), "hv-1"), BatchKey("hv-1", 1))
    fresh = store.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py()
    # the same records, as if they had been ingested two days ago; TTL merges are held so the
    # count can be checked before they run (otherwise a background merge may win the race)
    store.command("SYSTEM STOP TTL MERGES flow_log")
    store.command(
        "INSERT INTO flow_log (flow_id, proto, client_ip, server_ip, server_port, start, first, last, agent_id, "
        "inserted_at) SELECT flow_id, proto, client_ip, server_ip, server_port, start, first, last, 'stale', "
        "now() - INTERVAL 2 DAY FROM flow_log"
    )
    assert store.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py() == 2 * fresh
    store.command("SYSTEM START TTL MERGES flow_log")
    _optimize(store)
    left = store.query_arrow("SELECT agent_id, count() AS n FROM flow_log GROUP BY agent_id").to_pylist()
    assert left == [{"agent_id": "hv-1", "n": fresh}]


def test_ttl_follows_the_policy(open_store: StoreFactory) -> None:
    store = open_store(retention=RetentionPolicy(ttl_days={"flow_log": 1, "edge_1h": None}))
    assert "TTL inserted_at + toIntervalSecond(86400)" in store.command("SHOW CREATE TABLE flow_log")
    assert "TTL" not in store.command("SHOW CREATE TABLE edge_1h")
    assert "toIntervalSecond(172800)" in store.command("SHOW CREATE TABLE edge_1s")  # default: 2 days
    store.close()
    store = open_store(retention=RetentionPolicy(ttl_days={"flow_log": 0.5, "edge_1h": 365}))
    assert "toIntervalSecond(43200)" in store.command("SHOW CREATE TABLE flow_log")
    assert "toIntervalSecond(31536000)" in store.command("SHOW CREATE TABLE edge_1h")
    store.close()
    store = open_store(retention=RetentionPolicy(ttl_days={"flow_log": None}))
    assert "TTL" not in store.command("SHOW CREATE TABLE flow_log")
    with pytest.raises(ValueError, match="unknown table"):
        RetentionPolicy(ttl_days={"flows": 3})


def _flows_on_day(flows: pa.Table, day: int) -> pa.Table:
    """The records moved to 2024-01-``day`` (same time of day)."""
    shift = (1_704_067_200 + (day - 1) * 86_400) * NS - (
        flows["first_ns"][0].as_py() // (86_400 * NS)
    ) * 86_400 * NS
    for name in ("start_ns", "first_ns", "last_ns"):
        i = flows.schema.get_field_index(name)
        flows = flows.set_column(i, name, pa.array(flows[name].to_numpy() + shift, pa.int64()))
    return flows


def _partitions(store: ClickHouseStore, table: str) -> dict[str, int]:
    rows = store.query_arrow(
        "SELECT partition_id AS p, sum(bytes_on_disk) AS b FROM system.parts WHERE database = currentDatabase() "
        "AND table = {t:String} AND active GROUP BY p ORDER BY p",
        {"t": table},
    ).to_pylist()
    return {r["p"]: r["b"] for r in rows}


def test_disk_budget_drops_the_partition_ingested_longest_ago(store: ClickHouseStore, pcaps: Path) -> None:
    flows = batch_of(metered(pcaps, EXAMPLE), "hv-1")["flows"]
    for day in (1, 2, 3):
        store.insert({"flows": _flows_on_day(flows, day)}, BatchKey("hv-1", day))
    # day 3 is the newest traffic but reached the store first (say, an import that came in earlier)
    store.command(
        "ALTER TABLE flow_log UPDATE inserted_at = now() - INTERVAL 3 HOUR WHERE toYYYYMMDD(first) = 20240103 "
        "SETTINGS mutations_sync = 2"
    )
    parts = _partitions(store, "flow_log")
    assert list(parts) == ["20240101", "20240102", "20240103"]
    total = sum(parts.values())
    assert store.enforce_disk_budget(total) == []
    assert store.enforce_disk_budget() == []  # the policy has no budget
    dropped = store.enforce_disk_budget(total - 1)
    assert [(d.table, d.partition_id, d.bytes) for d in dropped] == [
        ("flow_log", "20240103", parts["20240103"])
    ]
    dropped = store.enforce_disk_budget(parts["20240102"])
    assert [(d.table, d.partition_id) for d in dropped] == [("flow_log", "20240101")]
    assert list(_partitions(store, "flow_log")) == ["20240102"]
    assert store.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py() == flows.num_rows


def test_disk_budget_spends_fine_data_before_rollups(open_store: StoreFactory, pcaps: Path) -> None:
    store = open_store(retention=RetentionPolicy(disk_budget_bytes=0))
    store.insert(batch_of(metered(pcaps, MULTI_DAY), "hv-1"), BatchKey("hv-1", 1))
    dropped = store.enforce_disk_budget()
    tiers = [TABLES[d.table].tier for d in dropped]
    assert tiers == sorted(tiers, key=TIER_ORDER.index) and set(tiers) == {"raw", "1m", "1h"}
    assert {d.table for d in dropped} == set(RAW)
    assert all(v == 0 for v in _rows(store).values())
    assert store.query_arrow("SELECT count() AS n FROM ingest_log")["n"][0].as_py() == 1  # meta tables stay


def test_max_days_caps_data_tables_but_not_the_ingest_log() -> None:
    policy = RetentionPolicy(ttl_days={"flow_log": 0.5, "edge_1h": None}, max_days=5)
    days = policy.effective_days()
    assert days["flow_log"] == 0.5 and days["edge_1s"] == 2  # below the cap
    assert days["edge_1m"] == days["endpoint_1h"] == days["edge_1h"] == 5  # capped, "forever" included
    assert days["ingest_log"] == 30
    assert policy.ttl_seconds()["edge_1h"] == 5 * 86_400
    assert RetentionPolicy().effective_days()["edge_1h"] == 400
    tiers = {t: TABLES[t].tier for t in REQUEST_TABLES}  # like the flows and edges they sit next to
    assert tiers == {"request_log": "raw", "request_1s": "raw", "request_1m": "1m", "request_1h": "1h"}
    assert [RetentionPolicy().effective_days()[t] for t in REQUEST_TABLES] == [7, 2, 30, 400]
    with pytest.raises(ValueError, match="max_days"):
        RetentionPolicy(max_days=0)
    with pytest.raises(ValueError, match="disk_budget_bytes"):
        RetentionPolicy(disk_budget_bytes=-1)


def test_set_retention_alters_the_live_tables_and_data_bytes_counts_data_only(
    store: ClickHouseStore, pcaps: Path
) -> None:
    assert store.data_bytes() == 0
    store.insert(batch_of(metered(pcaps, EXAMPLE), "hv-1"), BatchKey("hv-1", 1))
    data = sum(_partitions(store, t).get(p, 0) for t in RAW for p in _partitions(store, t))
    assert store.data_bytes() == data > 0  # ingest_log and schema_version not counted
    statements = store.set_retention(RetentionPolicy(max_days=1))
    data_tables = RAW + REQUEST_TABLES
    assert len(statements) == len(data_tables)  # every data table's TTL changed; ingest_log's did not
    assert all("toIntervalSecond(86400)" in store.command(f"SHOW CREATE TABLE {t}") for t in data_tables)
    assert store.set_retention(RetentionPolicy(max_days=1)) == []  # nothing left to change
