"""GET /metrics after real traffic: the values are what was sent, stored, queried and reported."""

from __future__ import annotations

import httpx
from metrics_served import Served, scrape, value

from cloudtap.server.store.ddl import TABLES


def test_metrics_need_metrics_read_on_every_project(served: Served) -> None:
    assert httpx.get(served.url + "/metrics").status_code == 401
    scoped = httpx.get(served.url + "/metrics", headers=served.project_viewer)
    assert scoped.status_code == 403 and "metrics:read" in scoped.json()["detail"]
    assert httpx.get(served.url + "/metrics", headers=served.viewer).status_code == 200


def test_ingest_counts_what_the_agent_shipped(served: Served) -> None:
    m = scrape(served)
    assert value(m, "cloudtap_server_ingest_batches_total", result="stored") == served.batches
    assert value(m, "cloudtap_server_ingest_batches_total", result="duplicate") == 1
    assert value(m, "cloudtap_server_ingest_batches_total", result="rejected") == 1
    assert value(m, "cloudtap_server_ingest_rejected_total", reason="unknown kind") == 1
    for kind, rows in served.rows.items():
        assert value(m, "cloudtap_server_ingest_rows_total", kind=kind) == rows
        assert value(m, "cloudtap_server_ingest_bytes_total", kind=kind) == served.nbytes[kind]
    duplicate_rows = sum(served.rows.values()) // 3  # the resent batch is about a third: counted as acknowledged
    assert sum(value(m, "cloudtap_server_ingest_acknowledged_rows_total", kind=k) for k in served.rows) > sum(
        served.rows.values()) + duplicate_rows // 2  # fmt: skip
    assert value(m, "cloudtap_server_ingest_wire_bytes_total") == served.wire_bytes
    # coalescing is on (50 ms): every stored batch went through a group insert; nothing waits now
    assert value(m, "cloudtap_server_ingest_coalesce_window_seconds") == 0.05
    groups = value(m, "cloudtap_server_ingest_coalesced_inserts_total")
    assert groups >= 1 and value(m, "cloudtap_server_ingest_group_batches_count") == groups
    assert value(m, "cloudtap_server_ingest_group_batches_sum") >= served.batches
    assert value(m, "cloudtap_server_ingest_queue_batches") == 0
    assert value(m, "cloudtap_server_ingest_failed_groups") == 0
    assert value(m, "cloudtap_server_storage_insert_seconds_count", path="coalesced") == groups


def test_storage_and_retention(served: Served) -> None:
    m = scrape(served)
    assert value(m, "cloudtap_server_storage_up") == 1
    assert value(m, "cloudtap_server_storage_budget_bytes") == 1 << 30
    assert value(m, "cloudtap_server_storage_rows", table="flow_log") == served.rows["flows"]
    assert value(m, "cloudtap_server_storage_parts", table="flow_log") >= 1
    assert {dict(k[1])["table"] for k in m if k[0] == "cloudtap_server_storage_parts"} == set(TABLES)
    data = value(m, "cloudtap_server_storage_data_bytes")
    assert 0 < data < 1 << 30 and data == served.app.state.store.data_bytes()
    assert value(m, "cloudtap_server_retention_runs_total") == 1  # the pass the fixture ran
    assert value(m, "cloudtap_server_retention_errors_total") == 0
    assert value(m, "cloudtap_server_retention_last_run_timestamp_seconds") > 0


def test_queries_analyses_and_pcap_by_route(served: Served) -> None:
    m = scrape(served)
    get, post = {"method": "GET"}, {"method": "POST"}
    query = {**get, "route": "/api/v1/query/top"}
    assert value(m, "cloudtap_server_http_requests_total", **query, code="2xx") == 1
    assert value(m, "cloudtap_server_http_requests_total", **query, code="4xx") == 1  # the bad metric name
    assert value(m, "cloudtap_server_http_request_duration_seconds_count", **query) == 2
    assert value(m, "cloudtap_server_http_response_bytes_total", **query) > 0
    analysis = {**post, "route": "/api/v1/analysis/topology"}
    assert value(m, "cloudtap_server_http_request_duration_seconds_count", **analysis) == 1
    assert value(m, "cloudtap_server_http_requests_total", **post, route="/api/v1/pcap", code="4xx") == 1
    ingest = {**post, "route": "/api/v1/ingest"}
    assert value(m, "cloudtap_server_http_requests_total", **ingest, code="2xx") == served.batches + 1
    assert value(m, "cloudtap_server_http_requests_total", **ingest, code="4xx") == 1
    assert value(m, "cloudtap_server_http_request_bytes_total", **ingest) > served.wire_bytes
    heartbeat = {**post, "route": "/api/v1/agents/{agent_id}/heartbeat"}  # templates, never agent ids
    assert value(m, "cloudtap_server_http_requests_total", **heartbeat, code="2xx") == 1
    assert not any("ag-" in v for k in m for _, v in k[1])


def test_controller_agents_and_commands(served: Served) -> None:
    m = scrape(served)
    states = {dict(k[1])["state"]: v for k, v in m.items() if k[0] == "cloudtap_server_controller_agents"}
    assert states == {"registered": 0, "capturing": 1, "paused": 0, "idle": 0, "stale": 0}
    assert value(m, "cloudtap_server_controller_heartbeat_lag_seconds_gcount") == 1
    assert value(m, "cloudtap_server_controller_heartbeat_lag_seconds_bucket", le="+Inf") == 1
    assert value(m, "cloudtap_server_controller_commands_issued_total") == 1
    assert value(m, "cloudtap_server_controller_commands_completed_total", action="stop", result="ok") == 1
    assert value(m, "cloudtap_server_controller_command_seconds_count") == 1
    assert value(m, "cloudtap_server_controller_command_delivery_seconds_count") == 1
    assert value(m, "cloudtap_server_controller_commands_pending") == 0


def test_inventory_sync_and_entities(served: Served) -> None:
    m = scrape(served)
    assert value(m, "cloudtap_server_inventory_syncs_total", source="static") >= 1
    assert value(m, "cloudtap_server_inventory_sync_failures_total", source="static") == 0
    assert value(m, "cloudtap_server_inventory_last_success_timestamp_seconds", source="static") > 0
    assert value(m, "cloudtap_server_inventory_entities", kind="vm") == 3
    assert value(m, "cloudtap_server_inventory_entities", kind="project") == 1
    assert value(m, "cloudtap_server_inventory_tagged_rows_total") >= sum(served.rows.values())


def test_every_collector_answered(served: Served) -> None:
    m = scrape(served)
    errors = {dict(k[1])["collector"]: v for k, v in m.items() if k[0] == "cloudtap_server_metrics_collector_errors_total"}
    assert errors == {"ingest": 0, "storage": 0, "controller": 0, "inventory": 0, "findings": 0}
    assert any(k[0] == "cloudtap_server_info" for k in m)
