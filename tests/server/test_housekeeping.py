"""Housekeeper and retention settings: settings reach the store's TTLs; the disk budget runs on schedule."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cloudtap.errors import ConfigError
from cloudtap.server.housekeeping import GIB, Housekeeper, retention_policy
from cloudtap.server.settings import ServerSettings, StorageSection, load_server_settings
from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore
from cloudtap.server.store.retention import DAY_S, DroppedPartition

sys.path.insert(0, str(Path(__file__).resolve().parent / "store"))
from store_batches import EXAMPLE, NS, batch_of, metered  # noqa: E402

StoreFactory = Callable[..., ClickHouseStore]
DATA_TABLES = ("flow_log", "edge_1s", "endpoint_1s", "edge_1m", "endpoint_1m", "edge_1h", "endpoint_1h")


def _wait(predicate: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        time.sleep(0.1)


# -- settings -> policy ---------------------------------------------------------------------------
def test_retention_days_caps_every_data_table_and_spares_the_ingest_log() -> None:
    policy = retention_policy(StorageSection(retention_days=3, ttl_days={"flow_log": 1, "edge_1h": None}))
    days = policy.effective_days()
    assert days["flow_log"] == 1  # below the cap: kept
    assert days["edge_1s"] == 2 and days["edge_1m"] == 3 and days["endpoint_1h"] == 3
    assert days["edge_1h"] == 3  # "forever" is capped too
    assert days["ingest_log"] == 30  # the exactly-once log must outlive the data
    assert policy.disk_budget_bytes is None
    assert retention_policy(StorageSection()).ttl_seconds()["edge_1h"] == 400 * DAY_S  # no cap by default
    assert retention_policy(StorageSection(max_disk_gib=1.5)).disk_budget_bytes == int(1.5 * GIB)


def test_storage_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="storage.ttl_days.*unknown table"):
        load_server_settings(env={"CLOUDTAP_SERVER__STORAGE__TTL_DAYS": "{flows: 3}"})
    with pytest.raises(ConfigError, match="storage.ttl_days.*positive"):
        load_server_settings(env={"CLOUDTAP_SERVER__STORAGE__TTL_DAYS": "{flow_log: 0}"})
    with pytest.raises(ConfigError, match="storage.retention_days"):
        load_server_settings(env={"CLOUDTAP_SERVER__STORAGE__RETENTION_DAYS": "0"})
    with pytest.raises(ConfigError, match="storage.housekeeping_s"):
        load_server_settings(env={"CLOUDTAP_SERVER__STORAGE__HOUSEKEEPING_S": "0"})
    path = tmp_path / "server.yaml"
    path.write_text(
        "storage:\n  retention_days: 14\n  ttl_days: {flow_log: 3, edge_1h: null}\n  housekeeping_s: 60\n"
    )
    storage = load_server_settings(path, env={}).storage
    assert (storage.retention_days, storage.ttl_days, storage.housekeeping_s) == (
        14,
        {"flow_log": 3, "edge_1h": None},
        60,
    )


# -- the housekeeper on a fake store -----------------------------------------------------------------
class FakeStore:
    """Drops what ``plan`` says, once per call; ``fail`` raises instead."""

    def __init__(self, plan: list[list[DroppedPartition]], size: int = 1000) -> None:
        self.plan = plan
        self.size = size
        self.budgets: list[int | None] = []
        self.fail: Exception | None = None

    def enforce_disk_budget(self, budget_bytes: int | None = None) -> list[DroppedPartition]:
        self.budgets.append(budget_bytes)
        if self.fail is not None:
            raise self.fail
        return self.plan.pop(0) if self.plan else []

    def data_bytes(self) -> int:
        return self.size


def test_runs_are_recorded_for_metrics() -> None:
    drops = [
        [DroppedPartition("flow_log", "20240101", 300), DroppedPartition("edge_1s", "20240101", 200)],
        [],
    ]
    store = FakeStore(drops)
    keeper = Housekeeper(store, ServerSettings(storage=StorageSection(max_disk_gib=2)), clock=lambda: 1000.0)
    run = keeper.run_once()
    assert store.budgets == [2 * GIB]
    assert (run.dropped_bytes, run.data_bytes, run.error) == (500, 1000, None)
    keeper.run_once()
    store.fail = RuntimeError("Code: 999. connection reset\nstack trace...")
    failed = keeper.run_once()
    assert failed.error == "RuntimeError: Code: 999. connection reset"
    snap = keeper.snapshot()
    assert snap["runs"] == 3 and snap["errors"] == 1
    assert snap["dropped_partitions_total"] == 2 and snap["dropped_bytes_total"] == 500
    assert snap["dropped_partitions_by_table"] == {"flow_log": 1, "edge_1s": 1}
    assert snap["dropped_bytes_by_table"] == {"flow_log": 300, "edge_1s": 200}
    assert snap["last_dropped"] == []  # the last successful run dropped nothing
    assert snap["last_error"].startswith("RuntimeError") and snap["last_error_at"] == 1000.0
    assert snap["last_run"] is not None and snap["data_bytes"] == 1000 and snap["budget_bytes"] == 2 * GIB


def test_no_budget_only_measures_and_an_unfit_store_is_inert() -> None:
    store = FakeStore([])
    keeper = Housekeeper(store, StorageSection())
    assert keeper.budget_bytes is None and keeper.period_s == 300
    keeper.run_once()
    assert store.budgets == [] and keeper.data_bytes == 1000
    inert = Housekeeper(object(), StorageSection(), period_s=0.01, initial_delay_s=0)
    inert.start()
    assert not inert.enabled and not inert.running
    inert.stop()
    with pytest.raises(ValueError, match="positive"):
        Housekeeper(store, StorageSection(), period_s=0)


def test_the_thread_runs_on_schedule_and_stops() -> None:
    store = FakeStore([])
    keeper = Housekeeper(store, StorageSection(max_disk_gib=1), period_s=0.05, initial_delay_s=0)
    with keeper:
        assert keeper.running
        _wait(lambda: keeper.runs >= 3, 10, "three runs")
    assert not keeper.running
    runs = keeper.runs
    time.sleep(0.2)
    assert keeper.runs == runs  # stopped means stopped
    slow = Housekeeper(store, StorageSection(), period_s=3600)  # first run one period after start
    slow.start()
    time.sleep(0.1)
    slow.stop()
    assert slow.runs == 0


# -- the housekeeper and the settings on a real store ----------------------------------------------------
def _flows_on_day(flows: pa.Table, day: int) -> pa.Table:
    """The records moved to 2024-01-``day`` (same time of day): one partition per day."""
    shift = (1_704_067_200 + (day - 1) * 86_400) * NS - (
        flows["first_ns"][0].as_py() // (86_400 * NS)
    ) * 86_400 * NS
    for name in ("start_ns", "first_ns", "last_ns"):
        i = flows.schema.get_field_index(name)
        flows = flows.set_column(i, name, pa.array(flows[name].to_numpy() + shift, pa.int64()))
    return flows


def _count(store: ClickHouseStore, sql: str) -> Any:
    return store.query_arrow(sql).column(0)[0].as_py()


def test_settings_reach_the_tables_ttl_and_a_change_alters_them(open_store: StoreFactory) -> None:
    store = open_store(retention=retention_policy(StorageSection(retention_days=1)))
    for table in DATA_TABLES:
        assert "toIntervalSecond(86400)" in store.command(f"SHOW CREATE TABLE {table}"), table
    assert "toIntervalSecond(2592000)" in store.command("SHOW CREATE TABLE ingest_log")
    changed = store.set_retention(
        retention_policy(StorageSection(ttl_days={"flow_log": 10, "edge_1h": None}))
    )
    assert {(sql.split()[2].split(".")[-1].strip("`"), sql.split()[3]) for sql in changed} >= {
        ("flow_log", "MODIFY"),
        ("edge_1h", "REMOVE"),
    }
    assert "toIntervalSecond(864000)" in store.command("SHOW CREATE TABLE flow_log")
    assert "TTL" not in store.command("SHOW CREATE TABLE edge_1h")
    store.close()
    store = open_store(retention=retention_policy(StorageSection(retention_days=2)))  # as at a restart
    assert "toIntervalSecond(172800)" in store.command("SHOW CREATE TABLE flow_log")
    assert "toIntervalSecond(172800)" in store.command("SHOW CREATE TABLE edge_1h")


def test_rows_older_than_retention_days_are_deleted_without_help(
    open_store: StoreFactory, shared_pcaps: Path
) -> None:
    store = open_store(retention=retention_policy(StorageSection(retention_days=1)))
    store.insert(batch_of(metered(shared_pcaps, EXAMPLE), "hv-1"), BatchKey("hv-1", 1))
    fresh = _count(store, "SELECT count() FROM flow_log")
    # the same records as if they had been ingested two days ago; TTL merges are held while counting
    store.command("SYSTEM STOP TTL MERGES flow_log")
    store.command(
        "INSERT INTO flow_log (flow_id, proto, client_ip, server_ip, server_port, start, first, last, agent_id, "
        "inserted_at) SELECT flow_id, proto, client_ip, server_ip, server_port, start, first, last, 'stale', "
        "now() - INTERVAL 2 DAY FROM flow_log"
    )
    assert _count(store, "SELECT count() FROM flow_log") == 2 * fresh
    store.command("SYSTEM START TTL MERGES flow_log")
    # no OPTIMIZE: ClickHouse's background TTL merge (embedded chDB too) removes them by itself
    _wait(
        lambda: _count(store, "SELECT count() FROM flow_log WHERE agent_id = 'stale'") == 0, 120, "TTL merge"
    )
    assert _count(store, "SELECT count() FROM flow_log") == fresh


def test_a_budget_below_the_data_drops_the_oldest_partitions_on_schedule(
    open_store: StoreFactory, shared_pcaps: Path
) -> None:
    flows = batch_of(metered(shared_pcaps, EXAMPLE), "hv-1")["flows"]
    store = open_store()
    for day in (1, 2, 3):
        store.insert({"flows": _flows_on_day(flows, day)}, BatchKey("hv-1", day))
    store.command("SYSTEM STOP MERGES flow_log")  # sizes stay as measured
    sizes = {
        r["p"]: r["b"]
        for r in store.query_arrow(
            "SELECT partition_id AS p, sum(bytes_on_disk) AS b FROM system.parts WHERE database = currentDatabase() "
            "AND table = 'flow_log' AND active GROUP BY p"
        ).to_pylist()
    }
    assert sorted(sizes) == ["20240101", "20240102", "20240103"]
    assert store.data_bytes() == sum(sizes.values())
    # the budget holds days 2 and 3 but not day 1 (all three arrived now: record day breaks the tie)
    budget_gib = (sizes["20240102"] + sizes["20240103"]) / GIB
    settings = ServerSettings(storage=StorageSection(max_disk_gib=budget_gib, housekeeping_s=0.2))
    keeper = Housekeeper(store, settings, initial_delay_s=0)
    assert keeper.period_s == 0.2
    with keeper:
        _wait(lambda: keeper.runs >= 2, 60, "two housekeeping runs")
    snap = keeper.snapshot()
    assert snap["errors"] == 0, snap["last_error"]
    assert snap["dropped_partitions_by_table"] == {"flow_log": 1}
    assert snap["dropped_bytes_total"] == sizes["20240101"]
    assert snap["data_bytes"] == store.data_bytes() <= keeper.budget_bytes
    left = store.query_arrow("SELECT DISTINCT toYYYYMMDD(first) AS d FROM flow_log ORDER BY d")[
        "d"
    ].to_pylist()
    assert left == [20240102, 20240103]
