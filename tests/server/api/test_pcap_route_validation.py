"""POST /api/v1/pcap input checks: callers never name agent URLs (422); unreachable agents are a 502, audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access_helpers import admin_client
from cloudtap.server.api.app import create_app
from cloudtap.server.audit import audit_of
from cloudtap.server.pcap import StaticTargets, Target
from cloudtap.server.settings import ServerSettings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = ServerSettings.model_validate(
        {"inventory": {"enabled": False}, "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
         "pcap": {"agent_timeout_s": 2.0},
         "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")}}
    )  # fmt: skip
    with admin_client(create_app(settings, None)) as c:  # type: ignore[arg-type]
        yield c


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"targets": [{"url": "http://10.0.0.7:9477"}]}, ["body", "targets"]),
        ({"targets": [{"url": "ftp://10.0.0.7/"}], "vm": "db-01"}, ["body", "targets"]),
        ({"agents": [{"agent": "hv-1", "url": "http://10.0.0.7:9477"}]}, ["body", "agents", 0, "url"]),
        ({"agents": [{"url": "http://10.0.0.7:9477"}]}, ["body", "agents", 0, "agent"]),
        ({"agents": [{"agent": ""}]}, ["body", "agents", 0, "agent"]),
    ],
)
def test_a_body_naming_agent_urls_is_422(client: TestClient, body: dict[str, Any], loc: list[Any]) -> None:
    r = client.post("/api/v1/pcap", json={"from": "-1h", **body})
    assert r.status_code == 422, r.text
    assert any(d["loc"][: len(loc)] == loc for d in r.json()["detail"]), r.json()["detail"]


def test_unreachable_agent_is_a_documented_502_and_audited(client: TestClient) -> None:
    app: Any = client.app
    app.state.pcap_targets = StaticTargets({"db-01": [Target("http://127.0.0.1:1")]})
    r = client.post("/api/v1/pcap", json={"from": "-1h", "vm": "db-01"})
    assert r.status_code == 502 and "127.0.0.1:1" in r.json()["detail"]
    assert "502" in app.openapi()["paths"]["/api/v1/pcap"]["post"]["responses"]
    line = audit_of(app).read(action="pcap.retrieve")[-1]
    assert line["status"] == 502 and line["outcome"] == "failed" and line["actor"].startswith("admin-")


def test_unreachable_registered_agent_is_a_502_naming_it(client: TestClient) -> None:
    """A registered agent whose checked control URL does not answer: 502, audited with the agent asked."""
    from cloudtap.server.api.routes.controller import get_controller_app
    from cloudtap.server.controller.status import HeartbeatReport

    app: Any = client.app
    ctl = get_controller_app(app)
    issued = ctl.register(
        None, {"name": "hv-dead", "hostname": "hv-dead", "machine_id": "m-dead"}, address="127.0.0.1"
    )
    answer = ctl.heartbeat(ctl.registry.get(issued["agent_id"]), HeartbeatReport(control_url="http://127.0.0.1:1"),
                           peer="127.0.0.1")  # fmt: skip
    assert not answer["control_url_error"]
    r = client.post("/api/v1/pcap", json={"from": "-1h", "agents": [{"agent": "hv-dead"}]})
    assert r.status_code == 502 and "127.0.0.1:1" in r.json()["detail"], r.text
    line = audit_of(app).read(action="pcap.retrieve")[-1]
    assert line["status"] == 502 and line["agents"] == ["hv-dead"] and line["actor"].startswith("admin-")
    unknown = client.post("/api/v1/pcap", json={"from": "-1h", "agents": [{"agent": "hv-never"}]})
    assert unknown.status_code == 400 and "hv-never" in unknown.json()["detail"]


def test_pcap_needs_credentials(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    assert anonymous.post("/api/v1/pcap", json={"from": "-1h", "vm": "db-01"}).status_code == 401
