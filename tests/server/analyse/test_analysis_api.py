"""/api/v1/analysis over FastAPI's TestClient: answers, names from app.state.names, 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from analysedata import AnalyseData, DictNames
from fastapi.testclient import TestClient

from access_helpers import admin_client, grant
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

A = {"time_from": "2026-11-20T01:55:00Z", "time_to": "2026-11-20T02:10:00Z"}
API = "/api/v1/analysis"


@pytest.fixture(scope="module")
def client(astore: Any, names: DictNames, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("analysis-api")
    settings = ServerSettings.model_validate(
        {"auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}}
    )
    app = create_app(settings, astore)
    with admin_client(app) as c:
        app.state.names = names  # after start-up: the inventory router's lifespan sets its own resolver
        yield c


def test_topology_compare_drill(client: TestClient, adata: AnalyseData) -> None:
    r = client.post(f"{API}/topology", json={**A, "level": "vm", "limit": 3})
    assert r.status_code == 200, r.text
    assert r.json()["edges"][0]["source_name"] == "db-01"
    r = client.post(f"{API}/compare", json={**A, "baseline": "before"})
    assert r.status_code == 200, r.text
    top = r.json()["edges"][0]
    assert top["source_name"] == "db-01" and top["bursts"][0]["start"] == "2026-11-20T02:00:00Z"
    r = client.post(f"{API}/drill", json={**A, "target": {"vm": "db-01"}})
    assert r.status_code == 200, r.text
    assert r.json()["one_way"][0]["to_ip"] == adata.ip_of("backup-01")
    r = client.post(f"{API}/bursts", json={**A, "filter": {"port": 873}})
    assert r.status_code == 200 and len(r.json()["bursts"]) == 1


def test_signatures_and_backtest(client: TestClient) -> None:
    sig = {"filter": {"vm": "db-01"}, "condition": {"metric": "bytes", "op": "gt", "threshold": 5e6}}
    r = client.post(f"{API}/backtest", json={"signature": sig})
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 3 and r.json()["period"]["text"] == "every 60 min ± 1 min"
    assert client.put(f"{API}/signatures/api-backup", json=sig).status_code == 200
    assert "api-backup" in [s["name"] for s in client.get(f"{API}/signatures").json()]
    run = client.post(f"{API}/signatures/api-backup/run")
    assert run.status_code == 200 and run.json()["count"] == 3
    assert client.post(f"{API}/backtest", json={"name": "api-backup"}).json()["count"] == 3
    assert client.delete(f"{API}/signatures/api-backup").status_code == 204
    assert client.get(f"{API}/signatures/api-backup").status_code == 404
    assert client.post(f"{API}/signatures/api-backup/run").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("topology", {**A, "level": "rack"}, "level"),
        ("compare", {**A, "metric": "colour"}, "metric"),
        ("compare", {**A, "step": "90ms"}, "step"),
        ("drill", {**A, "target": {"vm": "no-such-vm"}}, "vm"),
        ("bursts", {**A, "step": "1s", "time_from": "2026-11-01T00:00:00Z"}, "step"),
        ("backtest", {}, "signature"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, path: str, body: dict[str, Any], field: str) -> None:
    r = client.post(f"{API}/{path}", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == field


def test_analysis_needs_flows_read_and_signatures_write(client: TestClient) -> None:
    app = client.app
    sig = {"filter": {"vm": "db-01"}, "condition": {"metric": "bytes", "op": "gt", "threshold": 5e6}}
    anonymous = TestClient(app)  # type: ignore[arg-type]
    assert anonymous.post(f"{API}/topology", json={**A, "level": "vm"}).status_code == 401
    viewer = grant(app, "viewer")
    assert anonymous.post(f"{API}/topology", json={**A, "level": "vm"}, headers=viewer).status_code == 200
    assert anonymous.put(f"{API}/signatures/viewer-sig", json=sig, headers=viewer).status_code == 403
    assert anonymous.delete(f"{API}/signatures/viewer-sig", headers=viewer).status_code == 403
    operator = grant(app, "operator")
    assert anonymous.put(f"{API}/signatures/operator-sig", json=sig, headers=operator).status_code == 200
    assert anonymous.delete(f"{API}/signatures/operator-sig", headers=operator).status_code == 204


def test_schema_errors_are_422(client: TestClient) -> None:
    assert client.post(f"{API}/topology", json={"level": "vm"}).status_code == 422  # no time_from
    assert client.post(f"{API}/drill", json={**A, "target": {"port": 99999}}).status_code == 422
    assert client.put(f"{API}/signatures/bad name!", json={"condition": {"threshold": 1}}).status_code == 422
