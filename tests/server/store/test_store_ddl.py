"""Generated DDL: columns from the agent's schema, and the cluster (ON CLUSTER / Replicated / Distributed) text."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from cloudtap.l7.records import requests_to_arrow
from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.meter.edges import aggregate_edges, edges_with_text
from cloudtap.meter.records import empty_table
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.schema.request import empty_requests
from cloudtap.server.store import migrations
from cloudtap.server.store.clickhouse import insert_columns
from cloudtap.server.store.columns import FLOW_REQUEST_FIELDS
from cloudtap.server.store.ddl import (
    REQUEST_ROLLUPS,
    REQUESTS_SINCE,
    TABLES,
    VIEWS,
    DdlContext,
    create_table_sql,
)
from cloudtap.server.store.retention import RetentionPolicy, drop_partition_sql, enforce_disk_budget

CLUSTER = DdlContext("ct", "prod", RetentionPolicy().ttl_seconds())
SINGLE = DdlContext("ct", None, RetentionPolicy().ttl_seconds())


def _all_sql(ctx: DdlContext) -> list[str]:
    out = migrations.bootstrap_sql(ctx)
    for _, statements in migrations.migration_sql(ctx, 0):
        out += statements
    return out


def test_insert_columns_cover_what_agents_send() -> None:
    flows = {c.input_name: c for c in insert_columns("flows")}
    for f in empty_table().schema:
        assert f.name in flows, f.name
    assert flows["client_ip"].type == "IPv6" and flows["tunnel_dst"].type == "IPv6"
    assert flows["close_type"].type == "LowCardinality(String)"
    assert flows["first_ns"].name == "first" and flows["first_ns"].type == "DateTime64(9, 'UTC')"
    assert flows["bytes_c2s"].type == "UInt64" and flows["retrans_c2s"].type == "UInt32"
    assert {"agent_id", "interface_name", "vm_domain", "vm_mac", "client_vm_id", "server_pod_id"} <= set(
        flows
    )
    edges = {c.input_name for c in insert_columns("edges_1s")}
    assert set(edges_with_text(aggregate_edges(np.zeros(0, EDGE_DELTA_DTYPE), 1.0)).column_names) <= edges
    assert {c.input_name for c in insert_columns("edges_60s")} == edges
    ids = [c.name for c in TABLES["edge_1s"].columns if c.name.endswith("_id") and c.type == "UInt32"]
    assert len(ids) == 2 * 7 + 1  # client_/server_ region..service, and the edge's tunnel_id
    requests = {c.input_name: c for c in insert_columns("requests")}
    assert set(requests_to_arrow(empty_requests(0)).column_names) <= set(requests)
    assert requests["req_ns"].name == "req" and requests["resp_ns"].type == "DateTime64(9, 'UTC')"
    assert requests["client_ip"].type == "IPv6" and requests["server_ip"].type == "IPv6"
    assert requests["resource"].type == "String" and requests["host"].type == "String"
    assert requests["status"].type == "LowCardinality(String)" and requests["l7_proto"].type.startswith("Low")
    assert {"agent_id", "vm_mac", "client_service_id", "server_project_id"} <= set(requests)
    assert TABLES["request_log"].column("req_ns").expr == "ALIAS toUnixTimestamp64Nano(req)"
    flow_log = TABLES["flow_log"]
    for name in set(FLOW_REQUEST_FIELDS) & set(FLOW_DTYPE.names or ()):
        assert flow_log.column(name).since == REQUESTS_SINCE and flow_log.column(name).expr == "DEFAULT 0"


def test_single_node_ddl_is_plain_merge_tree() -> None:
    sql = "\n".join(_all_sql(SINGLE))
    assert "ON CLUSTER" not in sql and "Replicated" not in sql and "Distributed" not in sql
    flow = create_table_sql(TABLES["flow_log"], SINGLE)[0]
    assert "ENGINE = MergeTree\nPARTITION BY toYYYYMMDD(first)" in flow
    assert "ORDER BY (toStartOfHour(first), client_ip, server_ip, server_port, proto, first)" in flow
    assert "TTL `inserted_at` + INTERVAL 604800 SECOND" in flow
    assert "non_replicated_deduplication_window = 10000" in flow


def test_cluster_ddl_text() -> None:
    statements = _all_sql(CLUSTER)
    creates = [s for s in statements if s.startswith(("CREATE", "ALTER", "TRUNCATE"))]
    assert creates and all(" ON CLUSTER `prod`" in s for s in creates)
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `ct` ON CLUSTER `prod`"
    text = "\n".join(statements)
    # data tables: replicated local tables per shard, a Distributed table over each
    for name, spec in TABLES.items():
        if spec.tier == "meta":
            assert f"`ct`.`{name}_local`" not in text
            assert re.search(rf"CREATE TABLE IF NOT EXISTS `ct`.`{name}` ON CLUSTER `prod`\n\(", text)
            assert f"Replicated{spec.engine}('/clickhouse/tables/ct/{name}', '{{replica}}')" in text
            continue
        assert f"CREATE TABLE IF NOT EXISTS `ct`.`{name}_local` ON CLUSTER `prod`" in text
        assert f"Replicated{spec.engine}('/clickhouse/tables/{{shard}}/ct/{name}', '{{replica}}')" in text
        assert (
            f"CREATE TABLE IF NOT EXISTS `ct`.`{name}` ON CLUSTER `prod` AS `ct`.`{name}_local`\n"
            f"ENGINE = Distributed(`prod`, `ct`, `{name}_local`, {spec.shard_key})"
        ) in text
    assert "replicated_deduplication_window = 10000" in text and "non_replicated" not in text
    # views read and write the local tables on every shard; the backfill goes through Distributed tables
    for view in VIEWS.values():
        create = next(
            s for s in statements if s.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS `ct`.`{view.name}")
        )
        assert f"`ct`.`{view.name}_local` ON CLUSTER `prod` TO `ct`.`{view.target}_local`" in create
        assert f"FROM `ct`.`{view.source}_local`" in create
        backfill = f"INSERT INTO `ct`.`{view.target}`\nSELECT" in text
        assert backfill == (view.since == 3)  # the request rollups start empty with request_log
    assert "TRUNCATE TABLE IF EXISTS `ct`.`endpoint_1s_local` ON CLUSTER `prod`" in text
    assert (
        "ALTER TABLE `ct`.`flow_log_local` ON CLUSTER `prod` ADD COLUMN IF NOT EXISTS `client_region_id`"
        in text
    )
    assert "ALTER TABLE `ct`.`flow_log` ON CLUSTER `prod` ADD COLUMN IF NOT EXISTS `client_region_id`" in text
    for name in ("request_1s", "request_1m", "request_1h"):
        assert (
            f"ReplicatedAggregatingMergeTree('/clickhouse/tables/{{shard}}/ct/{name}', '{{replica}}')" in text
        )
        assert f"AS SELECT {REQUEST_ROLLUPS[name]}(req) AS time" in text
    assert "`latency_digest` AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), Float32)" in text
    for field in set(FLOW_REQUEST_FIELDS) & set(FLOW_DTYPE.names or ()):  # once FLOW_FIELDS has them
        for table in ("flow_log_local", "flow_log"):
            alter = f"ALTER TABLE `ct`.`{table}` ON CLUSTER `prod` ADD COLUMN IF NOT EXISTS `requests`"
            assert f"ADD COLUMN IF NOT EXISTS `{field}`" in next(s for s in statements if s.startswith(alter))
    assert drop_partition_sql(CLUSTER, "edge_1s", "20240101") == (
        "ALTER TABLE `ct`.`edge_1s_local` ON CLUSTER `prod` DROP PARTITION ID '20240101'"
    )


class _FakeClient:
    """Records statements; answers the disk-budget queries of a two-host cluster."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.queries: list[str] = []

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        self.queries.append(sql)

        class Result:
            result_rows: list[tuple[Any, ...]] = []

        if "system.parts" in sql:
            Result.result_rows = [
                ("h1", "flow_log_local", "20240101", 500), ("h1", "flow_log_local", "20240102", 400),
                ("h2", "flow_log_local", "20240101", 300), ("h2", "flow_log_local", "20240102", 600),
                ("h1", "edge_1h_local", "20240101", 50), ("h2", "ingest_log", "202401", 10_000),
            ]  # fmt: skip
        elif "FROM `ct`.`flow_log`" in sql:
            Result.result_rows = [("20240101", 200), ("20240102", 100)]  # 20240102 ingested first
        elif "FROM `ct`.`edge_1h`" in sql:
            Result.result_rows = [("20240101", 50)]
        return Result()

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        self.commands.append(sql)


def test_cluster_disk_budget_counts_the_fullest_host() -> None:
    client = _FakeClient()
    dropped = enforce_disk_budget(client, CLUSTER, budget_bytes=600)
    assert "clusterAllReplicas('prod', system.parts)" in client.queries[0]
    # h1 holds 950, h2 900 (ingest_log is not counted): drop 20240102 (older ingest) -> h1 550, h2 300
    assert [(d.table, d.partition_id, d.bytes) for d in dropped] == [("flow_log", "20240102", 600)]
    assert client.commands == [
        "ALTER TABLE `ct`.`flow_log_local` ON CLUSTER `prod` DROP PARTITION ID '20240102'"
    ]
