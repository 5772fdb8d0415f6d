"""Several server processes behind one address: two real server apps (``create_app``, no flow store) share one
PostgreSQL. An agent registered through server A is commanded through server B, its long-poll on A answers;
configs and policies written through one are read through the other."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings
from postgres_cluster import eventually, postgres_cluster, postgres_url  # noqa: F401 - fixtures

BOOT = "bootstrap-token"
AGENT = {"name": "agent-hv1", "hostname": "hv1", "machine_id": "m-hv1"}


def settings(tmp: Path, url: str) -> ServerSettings:
    tmp.mkdir(parents=True, exist_ok=True)
    return ServerSettings.model_validate({
        "inventory": {"enabled": False},
        "controller": {"database_url": url, "token": BOOT, "db_path": str(tmp / "unused.sqlite")},
        "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")},
    })  # fmt: skip


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Iterator[tuple[TestClient, TestClient]]:  # noqa: F811
    a, b = create_app(settings(tmp_path / "a", postgres_url), None), create_app(settings(tmp_path / "b", postgres_url), None)
    with TestClient(a) as ca, TestClient(b) as cb:
        for c in (ca, cb):
            listener = c.app.state.controller.db._listener  # type: ignore[attr-defined]
            assert listener is not None and listener.connected.wait(5)
        assert not (tmp_path / "a" / "unused.sqlite").exists()
        yield ca, cb


def test_an_agent_registered_through_one_server_is_commanded_through_another(
    servers: tuple[TestClient, TestClient],
) -> None:
    a, b = servers
    reg = a.post("/api/v1/agents/register", json=AGENT, headers=bearer(BOOT))
    assert reg.status_code == 200, reg.text
    agent_id, cred = reg.json()["agent_id"], reg.json()["credential"]
    operator = grant(b.app, "operator")
    assert eventually(lambda: b.get(f"/api/v1/agents/{agent_id}", headers=operator).status_code == 200)

    answer: dict[str, Any] = {}

    def long_poll() -> None:
        started = time.monotonic()
        r = a.get(f"/api/v1/agents/{agent_id}/commands", params={"wait": 20}, headers=bearer(cred))
        answer.update(status=r.status_code, body=r.json(), took=time.monotonic() - started)

    poll = threading.Thread(target=long_poll)
    poll.start()
    time.sleep(0.5)
    assert poll.is_alive()  # waiting on server A
    queued = b.post(f"/api/v1/agents/{agent_id}/capture/stop", headers=operator)
    assert queued.status_code == 200, queued.text
    poll.join(10)
    assert answer["status"] == 200 and answer["took"] < 5
    assert [(c["id"], c["action"]) for c in answer["body"]["commands"]] == [(queued.json()["command"], "stop")]

    # the agent reports through B (its credential, issued by A, is known there); A shows the result
    cmd_id = queued.json()["command"]
    eventually(lambda: b.post(f"/api/v1/agents/{agent_id}/heartbeat", json={}, headers=bearer(cred)).status_code == 200)
    done = b.post(f"/api/v1/agents/{agent_id}/commands/{cmd_id}/result", json={"ok": True, "detail": "stopped"},
                  headers=bearer(cred))  # fmt: skip
    assert done.status_code == 200, done.text
    status = a.get(f"/api/v1/commands/{cmd_id}", headers=grant(a.app, "viewer")).json()
    assert status["ok"] is True and status["detail"] == "stopped" and status["delivered_at"] is not None


def test_configs_and_policies_written_through_one_server_are_read_through_the_other(
    servers: tuple[TestClient, TestClient],
) -> None:
    a, b = servers
    reg = a.post("/api/v1/agents/register", json=AGENT, headers=bearer(BOOT)).json()
    agent_id, cred = reg["agent_id"], reg["credential"]
    admin_a, admin_b = grant(a.app, "admin"), grant(b.app, "admin")
    before = a.get(f"/api/v1/agents/{agent_id}/config", headers=bearer(cred)).json()["version"]

    put = b.put("/api/v1/groups/default/config", json={"overlay": {"limits": {"max_pps": 1234}}}, headers=admin_b)
    assert put.status_code == 200, put.text

    def config_on_a() -> dict[str, Any] | None:
        doc = a.get(f"/api/v1/agents/{agent_id}/config", headers=bearer(cred)).json()
        return doc if doc["overlay"] == {"limits": {"max_pps": 1234}} else None

    doc = eventually(config_on_a)
    assert doc["version"] > before
    hb = a.post(f"/api/v1/agents/{agent_id}/heartbeat", json={}, headers=bearer(cred)).json()
    assert hb["config_version"] == doc["version"]  # the heartbeat on A announces B's change
    groups = a.get("/api/v1/groups", headers=admin_a).json()
    assert [(g["name"], g["overlay"]) for g in groups] == [("default", {"limits": {"max_pps": 1234}})]

    policy = {"name": "shop", "priority": 10, "select": {"project": "shop"}}
    assert a.put("/api/v1/policies/shop", json=policy, headers=admin_a).status_code == 200
    names = lambda: [p["name"] for p in b.get("/api/v1/policies", headers=admin_b).json()]  # noqa: E731
    assert eventually(lambda: names() == ["shop"])
    assert b.delete("/api/v1/policies/shop", headers=admin_b).status_code == 200
    assert eventually(lambda: a.get("/api/v1/policies", headers=admin_a).json() == [])
