"""Versioned migrations: upgrade a version-1 store to the latest, idempotence, column repair."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from request_batches import planted_requests, request_batch
from store_batches import MULTI_DAY, batch_of, endpoint_totals, metered, text

from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.server.store import migrations
from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.clickhouse import ClickHouseStore
from cloudtap.server.store.columns import FLOW_REQUEST_FIELDS
from cloudtap.server.store.ddl import TABLES

StoreFactory = Callable[..., ClickHouseStore]


def _schema(store: ClickHouseStore) -> dict[str, list[tuple[str, str, str, str]]]:
    rows = store.query_arrow(
        "SELECT table, name, type, default_kind, default_expression, compression_codec FROM system.columns "
        "WHERE database = currentDatabase() ORDER BY table, position"
    ).to_pylist()
    out: dict[str, list[tuple[str, str, str, str]]] = {}
    for r in rows:
        out.setdefault(r["table"], []).append(
            (r["name"], r["type"], r["default_kind"] + " " + r["default_expression"], r["compression_codec"])
        )
    return out


def _tables(store: ClickHouseStore) -> set[str]:
    return set(
        store.query_arrow("SELECT name FROM system.tables WHERE database = currentDatabase()")[
            "name"
        ].to_pylist()
    )


def _older_agent(batch: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """``batch`` as an agent older than the request counts shipped it (no ``FLOW_REQUEST_FIELDS``)."""
    flows = batch["flows"]
    return {**batch, "flows": flows.drop_columns([f for f in FLOW_REQUEST_FIELDS if f in flows.column_names])}


def test_upgrade_from_version_1_to_latest(open_store: StoreFactory, pcaps: Path) -> None:
    old = open_store(migrate=False)
    assert old.schema_version() == 0
    assert old.migrate(target=1) == 1
    assert _tables(old) == {"schema_version", "ingest_log", "flow_log", "edge_1s", "edge_1m"}
    assert "client_vm_id" not in {c[0] for c in _schema(old)["flow_log"]}
    batch = _older_agent(batch_of(metered(pcaps, MULTI_DAY), "hv-1"))
    old.insert(batch, BatchKey("hv-1", 1))  # agents shipped to the version-1 server

    assert old.migrate() == migrations.LATEST == 4
    assert old.schema_version() == 4
    versions = old.query_arrow("SELECT version FROM schema_version ORDER BY version")["version"].to_pylist()
    assert versions == [1, 2, 3, 4]
    # the rollups were backfilled from the edges stored before the upgrade
    want = endpoint_totals(batch["edges_1s"])
    got = old.query_arrow(
        f"SELECT {text('ip')} AS ip, sum(bytes_out) AS b FROM endpoint_1s GROUP BY ip"
    ).to_pylist()
    assert {r["ip"]: r["b"] for r in got} == {ip: v["bytes_out"] for ip, v in want.items()}
    hourly = old.query_arrow("SELECT sum(bytes_c2s) AS b FROM edge_1h")["b"][0].as_py()
    assert hourly == sum(batch["edges_60s"]["bytes_c2s"].to_pylist())
    # new inserts flow through the views, identity columns exist with their default
    old.insert(batch, BatchKey("hv-1", 2))
    got = old.query_arrow("SELECT sum(bytes_out) AS b, max(vm_id) AS vm FROM endpoint_1s").to_pylist()[0]
    assert got == {"b": 2 * sum(v["bytes_out"] for v in want.values()), "vm": 0}
    # an upgraded store has exactly the schema of a store created at the latest version
    fresh = ClickHouseStore(old.dsn, database=old.database + "_fresh")
    try:
        fresh.migrate()
        assert _schema(old) == _schema(fresh)
        assert _tables(old) == _tables(fresh)
    finally:
        fresh.close()


def test_migrate_is_idempotent(store: ClickHouseStore, pcaps: Path) -> None:
    batch = batch_of(metered(pcaps, MULTI_DAY), "hv-1")
    store.insert(batch, BatchKey("hv-1", 1))
    before = store.query_arrow("SELECT sum(bytes_in) AS b FROM endpoint_1m")["b"][0].as_py()
    schema = _schema(store)
    assert store.migrate() == 4 and store.migrate() == 4
    assert store.query_arrow("SELECT count() AS n FROM schema_version")["n"][0].as_py() == 4
    # re-running a migration's statements (a crash before its version row) changes nothing
    for sql in migrations.MIGRATIONS[2].statements(store.ctx):
        store.command(sql)
    assert store.query_arrow("SELECT sum(bytes_in) AS b FROM endpoint_1m")["b"][0].as_py() == before
    assert _schema(store) == schema


def test_missing_columns_are_added_back(store: ClickHouseStore) -> None:
    store.command("ALTER TABLE flow_log DROP COLUMN server_pod_id")
    store.command("ALTER TABLE edge_1s DROP COLUMN vm_mac")
    assert "server_pod_id" not in {c[0] for c in _schema(store)["flow_log"]}
    store.migrate()
    assert "server_pod_id" in {c[0] for c in _schema(store)["flow_log"]}
    assert ("vm_mac", "LowCardinality(String)") in {c[:2] for c in _schema(store)["edge_1s"]}


def test_every_table_in_the_spec_exists(store: ClickHouseStore) -> None:
    views = {"endpoint_1s_mv", "endpoint_1m_mv", "edge_1h_mv", "endpoint_1h_mv"}
    views |= {"request_1s_mv", "request_1m_mv", "request_1h_mv"}
    assert _tables(store) == set(TABLES) | views
    with pytest.raises(ValueError, match="unsupported store DSN"):
        ClickHouseStore("postgres://x")


def test_upgrade_from_version_3_adds_requests(open_store: StoreFactory, pcaps: Path) -> None:
    old = open_store(migrate=False)
    assert old.migrate(target=3) == 3
    assert not {"request_log", "request_1m"} & _tables(old)
    flow_columns = {c[0] for c in _schema(old)["flow_log"]}
    assert not set(FLOW_REQUEST_FIELDS) & flow_columns
    batch = _older_agent(batch_of(metered(pcaps, MULTI_DAY), "hv-1"))
    old.insert(batch, BatchKey("hv-1", 1))  # a version-3 server had flows
    flows_before = old.query_arrow("SELECT count() AS n FROM flow_log")["n"][0].as_py()

    assert old.migrate() == 4
    assert {"request_log", "request_1s", "request_1m", "request_1h", "request_1m_mv"} <= _tables(old)
    added = [f for f in FLOW_REQUEST_FIELDS if f in (FLOW_DTYPE.names or ())]  # the agent's new flow fields
    assert added == [c[0] for c in _schema(old)["flow_log"]][-len(added) :] if added else True
    got = old.query_arrow(
        "SELECT count() AS n" + "".join(f", sum({f}) AS {f}" for f in added) + " FROM flow_log"
    ).to_pylist()[0]
    assert got == {"n": flows_before, **{f: 0 for f in added}}  # older rows read the default
    old.insert({"requests": request_batch(planted_requests(200, seed=3), "hv-1")}, BatchKey("hv-1", 2))
    assert old.query_arrow("SELECT sum(requests) AS n FROM request_1h")["n"][0].as_py() == 200
    fresh = ClickHouseStore(old.dsn, database=old.database + "_fresh")
    try:
        fresh.migrate()
        assert _schema(old) == _schema(fresh)
        assert _tables(old) == _tables(fresh)
    finally:
        fresh.close()
