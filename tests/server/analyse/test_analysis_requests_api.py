"""Request metrics through /api/v1/analysis: the same routes with ``metric=``, credentials, project scope."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from requestdata import HOUR, IDS, VMS, WINDOW, RequestData

from access_helpers import admin_client, grant
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

API = "/api/v1/analysis"


@pytest.fixture(scope="module")
def client(rstore: Any, rdata: RequestData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("analysis-requests-api")
    settings = ServerSettings.model_validate(
        {"auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}}
    )
    app = create_app(settings, rstore)
    with admin_client(app) as c:
        app.state.names = (
            rdata.names()
        )  # after start-up: the inventory router's lifespan sets its own resolver
        yield c


def test_routes_take_request_metrics(client: TestClient) -> None:
    r = client.post(f"{API}/topology", json={**HOUR, "level": "vm", "metric": "latency_p99"})
    assert r.status_code == 200, r.text
    edge = r.json()["edges"][0]
    assert (edge["source_name"], edge["target_name"], edge["l7_proto"]) == ("shop", "db", "mysql")
    assert edge["requests"]["latency_p99_ms"] > edge["requests"]["latency_p50_ms"] > 0
    r = client.post(
        f"{API}/compare", json={**WINDOW, "baseline": "before", "level": "vm", "metric": "latency_p99"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["edges"][0]["target_name"] == "db" and r.json()["edges"][0]["abs_change"] > 0
    r = client.post(f"{API}/drill", json={**HOUR, "target": {"vm": "db"}, "metric": "latency_max"})
    assert r.status_code == 200, r.text
    assert (
        r.json()["slowest"][0]["resource"].startswith("UPDATE") and r.json()["error_codes"][0]["code"] == 1062
    )
    sig = {"filter": {"vm": "db"}, "condition": {"metric": "latency_p99", "threshold": 15}}
    r = client.post(f"{API}/backtest", json={"signature": sig})
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 1 and r.json()["stored_table"] == "request_1m"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("topology", {**HOUR, "metric": "p99"}, "metric"),
        ("compare", {**WINDOW, "metric": "latency_p95"}, "metric"),
        ("drill", {**HOUR, "target": {"vm": "db"}, "metric": "bytes"}, "metric"),
        ("topology", {**HOUR, "metric": "errors", "filter": {"proto": "udp"}}, "filter"),
    ],
)
def test_bad_request_metric_is_422_listing_the_metrics(client: TestClient, path: str, body: dict[str, Any],
                                                      field: str) -> None:  # fmt: skip
    r = client.post(f"{API}/{path}", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == field
    if field == "metric":
        assert "latency_p99" in detail["ctx"]["allowed"]


def test_request_metrics_need_credentials(client: TestClient) -> None:
    anonymous = TestClient(client.app)  # type: ignore[arg-type]
    body = {**HOUR, "metric": "latency_p99"}
    assert anonymous.post(f"{API}/topology", json=body).status_code == 401
    assert anonymous.post(f"{API}/drill", json={**HOUR, "target": {"vm": "db"}}).status_code == 401
    viewer = grant(client.app, "viewer")
    assert anonymous.post(f"{API}/topology", json=body, headers=viewer).status_code == 200


def test_a_project_bound_user_sees_only_its_projects_requests(client: TestClient, rdata: RequestData) -> None:
    other = grant(client.app, "viewer", ["other"])
    anonymous = TestClient(client.app)  # type: ignore[arg-type]
    r = anonymous.post(f"{API}/topology", json={**HOUR, "level": "vm", "metric": "requests"}, headers=other)
    assert r.status_code == 200, r.text
    got = {(e["source_name"], e["target_name"]): e["requests"]["requests"] for e in r.json()["edges"]}
    in_other = {vm for vm, (project, _, _) in VMS.items() if project == "other"}
    want = {(c, s): int(rdata.mask(c, s).sum()) for c, s in {*zip(rdata.client, rdata.server, strict=True)}
            if c in in_other or s in in_other}  # fmt: skip
    assert got == want and ("shop", "db") not in got
    r = anonymous.post(
        f"{API}/drill", json={**HOUR, "target": {"vm": f"id:{IDS['vm']['db']}"}}, headers=other
    )
    assert r.status_code == 200, r.text
    assert r.json()["slowest"] == [] and r.json()["error_codes"] == [] and r.json()["requests"] == []
    r = anonymous.post(
        f"{API}/compare", json={**WINDOW, "baseline": "before", "metric": "latency_p99"}, headers=other
    )
    assert r.status_code == 200, r.text
    assert {e["target"] for e in r.json()["edges"]} == {VMS["cache"][2], VMS["shop"][2]}
    sig = {"filter": {"ip": VMS["db"][2]}, "condition": {"metric": "requests", "threshold": 0}}
    r = anonymous.post(f"{API}/backtest", json={"signature": sig}, headers=other)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 0
