"""/api/v1/findings: permissions on every route, project scope inside the storage query, ack/mute, rules, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from findingsdata import names_of
from findingsrun import Ran

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

ROUTES = [
    ("GET", "/api/v1/findings", None),
    ("GET", "/api/v1/findings/abc", None),
    ("POST", "/api/v1/findings/abc/ack", {"reason": "x"}),
    ("POST", "/api/v1/findings/abc/mute", {"reason": "x"}),
    ("POST", "/api/v1/findings/abc/unmute", {}),
    ("POST", "/api/v1/findings/run", {"time_from": "-1h"}),
    ("GET", "/api/v1/findings/rules", None),
    ("GET", "/api/v1/findings/rules/r1/history", None),
    (
        "PUT",
        "/api/v1/findings/rules/r1",
        {"name": "r1", "a": {"project": "shop"}, "b": {"cidr": "10.0.0.0/8"}},
    ),
    ("DELETE", "/api/v1/findings/rules/r1", None),
]
WRITES = [r for r in ROUTES if r[0] != "GET"]


@pytest.fixture(scope="module")
def api(planted: Ran, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp: Path = tmp_path_factory.mktemp("findings-api")
    settings = ServerSettings.model_validate({
        "inventory": {"enabled": False}, "controller": {"db_path": str(tmp / "ctl.sqlite")},
        "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")},
        "findings": {"enabled": False, "learn_minutes": 10},
    })  # fmt: skip
    app = create_app(settings, planted.store)
    app.state.names = names_of(planted.data)
    yield app


@pytest.fixture(scope="module")
def client(api: FastAPI) -> TestClient:
    return TestClient(api, raise_server_exceptions=False)


def _call(
    client: TestClient, method: str, path: str, body: Any, headers: dict[str, str] | None = None
) -> Any:
    return client.request(method, path, json=body, headers=headers or {})


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_without_credentials_401(client: TestClient, method: str, path: str, body: Any) -> None:
    assert _call(client, method, path, body).status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_a_viewer_may_not_change_anything(
    api: FastAPI, client: TestClient, method: str, path: str, body: Any
) -> None:
    assert _call(client, method, path, body, grant(api, "viewer")).status_code == 403


def test_a_viewer_reads_findings(api: FastAPI, client: TestClient, planted: Ran) -> None:
    answer = client.get("/api/v1/findings?limit=1000", headers=grant(api, "viewer"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == len(planted.engine.findings.find(limit=1000)) > 10
    first = body["findings"][0]
    one = client.get(f"/api/v1/findings/{first['id']}", headers=grant(api, "viewer")).json()
    assert one["id"] == first["id"] and one["reproduce"].startswith("cloudtap ")
    warn = client.get("/api/v1/findings?severity=warning&limit=1000", headers=grant(api, "viewer")).json()
    assert warn["findings"] and all(f["severity"] in ("warning", "critical") for f in warn["findings"])
    scans = client.get("/api/v1/findings?kind=scan", headers=grant(api, "viewer")).json()
    assert [f["kind"] for f in scans["findings"]] == ["scan"]
    bad = client.get("/api/v1/findings?kind=nope", headers=grant(api, "viewer"))
    assert bad.status_code == 422 and "scan" in bad.json()["detail"][0]["ctx"]["allowed"]


def test_a_project_bound_user_sees_only_its_projects(api: FastAPI, client: TestClient, planted: Ran) -> None:
    ids = names_of(planted.data).ids("project", "analytics")
    headers = grant(api, "viewer", ["analytics"])
    seen = client.get("/api/v1/findings?limit=1000", headers=headers).json()["findings"]
    assert seen and all(
        ids[0] in (f["subject"]["client_project_id"], f["subject"]["server_project_id"]) for f in seen
    )
    kinds = {f["kind"] for f in seen}
    assert "isolation_crossing" in kinds and "lb_imbalance" not in kinds and "scan" not in kinds
    everything = planted.engine.findings.find(limit=1000)
    hidden = next(f for f in everything if f.kind == "lb_imbalance")
    assert client.get(f"/api/v1/findings/{hidden.id}", headers=headers).status_code == 404
    operator = grant(api, "operator", ["analytics"])
    assert client.post(f"/api/v1/findings/{hidden.id}/ack", json={}, headers=operator).status_code == 404
    assert client.post("/api/v1/findings/run", json={"time_from": "-1h"}, headers=operator).status_code == 403
    assert client.get("/api/v1/findings/rules", headers=headers).status_code == 403


def test_an_operator_acknowledges_and_mutes(api: FastAPI, client: TestClient, planted: Ran) -> None:
    target = next(f for f in planted.engine.findings.find(limit=1000) if f.kind == "new_port")
    operator = grant(api, "operator", name="olga")
    acked = client.post(
        f"/api/v1/findings/{target.id}/ack", json={"reason": "planned migration"}, headers=operator
    )
    assert acked.status_code == 200 and acked.json()["user"] == "olga"
    shown = client.get(f"/api/v1/findings/{target.id}", headers=operator).json()
    assert shown["state"] == "acknowledged" and shown["actions"][0]["reason"] == "planned migration"
    muted = client.post(
        f"/api/v1/findings/{target.id}/mute", json={"reason": "noise", "until": "+2h"}, headers=operator
    )
    assert muted.status_code == 200 and muted.json()["until"]
    assert client.get(f"/api/v1/findings/{target.id}", headers=operator).json()["state"] == "muted"
    past = client.post(f"/api/v1/findings/{target.id}/mute", json={"until": "-1h"}, headers=operator)
    assert past.status_code == 422 and past.json()["detail"][0]["loc"][-1] == "until"
    assert client.post(f"/api/v1/findings/{target.id}/unmute", json={}, headers=operator).status_code == 200
    assert client.get(f"/api/v1/findings/{target.id}", headers=operator).json()["state"] == "acknowledged"
    assert client.post("/api/v1/findings/nope/ack", json={}, headers=operator).status_code == 404


def test_rules_are_versioned(api: FastAPI, client: TestClient) -> None:
    admin = grant(api, "operator", name="rita")
    rule = {
        "name": "no-infra-shop",
        "a": {"cidr": "10.10.3.0/24"},
        "b": {"project": "shop"},
        "both_ways": False,
    }
    first = client.put("/api/v1/findings/rules/no-infra-shop", json=rule, headers=admin)
    assert first.status_code == 200 and first.json()["version"] == 1 and first.json()["updated_by"] == "rita"
    second = client.put(
        "/api/v1/findings/rules/no-infra-shop", json={**rule, "severity": "warning"}, headers=admin
    )
    assert second.json()["version"] == 2
    history = client.get("/api/v1/findings/rules/no-infra-shop/history", headers=grant(api, "viewer")).json()
    assert [r["version"] for r in history] == [1, 2] and history[1]["severity"] == "warning"
    names = {r["name"] for r in client.get("/api/v1/findings/rules", headers=grant(api, "viewer")).json()}
    assert {"no-infra-shop", "no-analytics-shop"} <= names
    bad = client.put(
        "/api/v1/findings/rules/x", json={**rule, "name": "x", "a": {"cidr": "nope"}}, headers=admin
    )
    assert bad.status_code == 422
    assert client.delete("/api/v1/findings/rules/no-infra-shop", headers=admin).status_code == 204
    names = {r["name"] for r in client.get("/api/v1/findings/rules", headers=admin).json()}
    assert "no-infra-shop" not in names
    assert client.delete("/api/v1/findings/rules/no-infra-shop", headers=admin).status_code == 404


def test_run_on_a_past_window_and_metrics(api: FastAPI, client: TestClient, planted: Ran) -> None:
    t0 = planted.data.start_s
    ran = client.post("/api/v1/findings/run", json={"time_from": t0, "time_to": t0 + 300},
                      headers=grant(api, "operator"))  # fmt: skip
    assert ran.status_code == 200 and ran.json()["minutes"] == 5
    bad = client.post(
        "/api/v1/findings/run", json={"time_from": "yesterday-ish"}, headers=grant(api, "operator")
    )
    assert bad.status_code == 422
    metrics = client.get("/metrics", headers=grant(api, "viewer")).text
    assert "cloudtap_server_findings_cycles_total 5.0" in metrics
    assert 'cloudtap_server_findings_new_total{kind="scan",severity="critical"}' in metrics
    assert "cloudtap_server_findings_open{" in metrics
