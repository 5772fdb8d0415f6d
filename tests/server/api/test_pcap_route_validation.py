"""POST /api/v1/pcap input checks: target URLs must be http(s) with a host (422); unreachable agents are a 502."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloudtap.server.api.app import create_app
from cloudtap.server.api.routes.pcap import check_agent_url
from cloudtap.server.settings import ServerSettings


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    settings = ServerSettings.model_validate(
        {"inventory": {"enabled": False}, "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
         "pcap": {"audit_log": str(tmp_path / "audit.jsonl"), "agent_timeout_s": 2.0}}
    )  # fmt: skip
    return TestClient(create_app(settings, None))  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["", "10.0.0.7:9477", "ftp://10.0.0.7/", "http://", "http://a b/", "http://h:99999/"])
def test_bad_target_urls_are_422_naming_the_field(client: TestClient, url: str) -> None:
    r = client.post("/api/v1/pcap", json={"from": "-1h", "targets": [{"url": url}]})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][:4] == ["body", "targets", 0, "url"] and "url" in detail["msg"]


def test_good_urls_pass_the_check() -> None:
    for url in ("http://10.0.0.7:9477", "https://agent-1.example/ctl", "http://[fd00::7]:9477"):
        assert check_agent_url(url) == url


def test_unreachable_agent_is_a_documented_502_and_audited(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/api/v1/pcap", json={"from": "-1h", "targets": [{"url": "http://127.0.0.1:1"}]},
                    headers={"X-Cloudtap-User": "alice"})  # fmt: skip
    assert r.status_code == 502 and "127.0.0.1:1" in r.json()["detail"]
    assert "502" in client.app.openapi()["paths"]["/api/v1/pcap"]["post"]["responses"]  # type: ignore[attr-defined]
    line = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert line["user"] == "alice" and line["status"] == 502
