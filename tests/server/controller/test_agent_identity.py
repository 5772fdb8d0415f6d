"""Agent identity in process: registration issues a credential and a control key, every agent call needs the
credential of that very agent, ingest takes only batches of the credential's agent, control URLs are checked."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.errors import ConfigError
from cloudtap.server.api.app import create_app
from cloudtap.server.controller.control_url import ControlNetworks, check_control_url
from cloudtap.server.controller.db import ControllerDB
from cloudtap.server.controller.identity import AgentIdentities
from cloudtap.server.settings import ServerSettings
from cloudtap.ship.wire import encode_batch

BOOT = "bootstrap-token"


def settings(tmp_path: Path, coalesce_ms: float = 50.0, **controller: Any) -> ServerSettings:
    return ServerSettings.model_validate({
        "controller": {"db_path": str(tmp_path / "ctl.sqlite"), **controller},
        "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
        "ingest": {"coalesce_ms": coalesce_ms, "wal_dir": str(tmp_path / "wal")},
    })  # fmt: skip


@pytest.fixture
def app(open_store: Any, tmp_path: Path) -> Any:
    return create_app(settings(tmp_path, token=BOOT), open_store())


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client: TestClient, host: str, token: str = BOOT, **extra: Any) -> dict[str, Any]:
    body = {"name": f"agent-{host}", "hostname": host, "machine_id": f"m-{host}", **extra}
    r = client.post("/api/v1/agents/register", json=body, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_registration_issues_a_credential_and_a_control_key_rotated_at_each_registration(client: TestClient) -> None:
    a = register(client, "hv-a")
    assert a["credential"].startswith(f"cta_{a['agent_id']}_") and len(a["control_key"]) >= 40
    ok = client.post(f"/api/v1/agents/{a['agent_id']}/heartbeat", json={}, headers=bearer(a["credential"]))
    assert ok.status_code == 200, ok.text
    boot = client.post(f"/api/v1/agents/{a['agent_id']}/heartbeat", json={}, headers=bearer(BOOT))
    assert boot.status_code == 401 and "bootstrap token only registers" in boot.json()["detail"]
    none = client.get(f"/api/v1/agents/{a['agent_id']}/config")
    assert none.status_code == 401 and "missing agent credential" in none.json()["detail"]
    again = register(client, "hv-a", token=a["credential"])  # its own credential registers it again
    assert again["agent_id"] == a["agent_id"] and again["credential"] != a["credential"]
    assert again["control_key"] != a["control_key"]
    old = client.get(f"/api/v1/agents/{a['agent_id']}/config", headers=bearer(a["credential"]))
    assert old.status_code == 401 and "register again" in old.json()["detail"]
    rotated = register(client, "hv-a")  # the bootstrap token rotates both too
    assert client.get(f"/api/v1/agents/{a['agent_id']}/config", headers=bearer(again["credential"])).status_code == 401
    assert client.get(f"/api/v1/agents/{a['agent_id']}/config", headers=bearer(rotated["credential"])).status_code == 200
    ctl = client.app.state.controller  # type: ignore[attr-defined]
    assert ctl.control_key(a["agent_id"]) == rotated["control_key"]
    stored = sqlite3.connect(ctl.db.path).execute("SELECT credential_digest, control_key FROM agents").fetchone()
    assert rotated["credential"].split("_", 2)[2] not in stored[0] and stored[1] == rotated["control_key"]


def test_bad_bootstrap_tokens_are_refused_and_audited(client: TestClient, tmp_path: Path) -> None:
    body = {"hostname": "intruder", "machine_id": "x"}
    assert client.post("/api/v1/agents/register", json=body).status_code == 401
    wrong = client.post("/api/v1/agents/register", json=body, headers=bearer("nope"))
    assert wrong.status_code == 403 and wrong.json()["detail"] == "wrong shared token"
    a = register(client, "hv-a")
    foreign = client.post("/api/v1/agents/register", json=body, headers=bearer(a["credential"]))
    assert foreign.status_code == 403 and "not agent" in foreign.json()["detail"]
    audit = (tmp_path / "audit.jsonl").read_text()
    assert audit.count('"action":"agent.register"') == 4 and '"outcome":"refused"' in audit
    assert BOOT not in audit and a["credential"] not in audit and a["control_key"] not in audit


def test_a_second_agent_cannot_act_as_the_first(client: TestClient) -> None:
    a, b = register(client, "hv-a"), register(client, "hv-b")
    first, as_b = a["agent_id"], bearer(b["credential"])
    calls = [("POST", f"/api/v1/agents/{first}/heartbeat", {"json": {}}),
             ("GET", f"/api/v1/agents/{first}/config", {}),
             ("GET", f"/api/v1/agents/{first}/commands", {"params": {"wait": 0}}),
             ("POST", f"/api/v1/agents/{first}/commands/1/result", {"json": {"ok": True}})]  # fmt: skip
    for method, path, kw in calls:
        r = client.request(method, path, headers=as_b, **kw)
        assert r.status_code == 403 and f"belongs to agent {b['agent_id']!r}" in r.json()["detail"], (path, r.text)
    admin = grant(client.app)
    cmd = client.post(f"/api/v1/agents/{first}/capture/stop", headers=admin).json()["command"]
    own = client.post(f"/api/v1/agents/{b['agent_id']}/commands/{cmd}/result", json={"ok": False}, headers=as_b)
    assert own.status_code == 404  # a's command is not b's to answer
    taken = client.get(f"/api/v1/agents/{first}/commands", params={"wait": 0}, headers=bearer(a["credential"]))
    assert [c["id"] for c in taken.json()["commands"]] == [cmd]


@pytest.mark.parametrize("coalesce_ms", [50.0, 0.0])
def test_ingest_takes_only_the_credentials_agent(open_store: Any, tmp_path: Path, coalesce_ms: float) -> None:
    with TestClient(create_app(settings(tmp_path, coalesce_ms, token=BOOT), open_store())) as client:
        _ingest_takes_only_the_credentials_agent(client)


def _ingest_takes_only_the_credentials_agent(client: TestClient) -> None:
    a, b = register(client, "hv-a"), register(client, "hv-b")
    headers = {"Content-Type": "application/vnd.cloudtap.batch"}
    batch_a = encode_batch("agent-hv-a", 7, {})
    none = client.post("/api/v1/ingest", content=batch_a, headers=headers)
    assert none.status_code == 401
    forged = client.post("/api/v1/ingest", content=batch_a, headers={**headers, **bearer(b["credential"])})
    assert forged.status_code == 403 and "agent-hv-b" in forged.json()["detail"]
    real = client.post("/api/v1/ingest", content=batch_a, headers={**headers, **bearer(a["credential"])})
    assert real.status_code == 200 and real.json()["duplicate"] is False, real.text  # b did not take (a, 7)
    own_b = client.post("/api/v1/ingest", content=encode_batch("agent-hv-b", 7, {}),
                        headers={**headers, **bearer(b["credential"])})  # fmt: skip
    assert own_b.status_code == 200 and own_b.json()["duplicate"] is False


def test_an_admin_user_token_imports_batches_of_any_agent_name(client: TestClient) -> None:
    headers = {"Content-Type": "application/vnd.cloudtap.batch"}
    batch = encode_batch("import:lab", 1, {})
    admin, operator = grant(client.app), grant(client.app, "operator")
    assert client.post("/api/v1/ingest", content=batch, headers={**headers, **admin}).status_code == 200
    refused = client.post("/api/v1/ingest", content=batch, headers={**headers, **operator})
    assert refused.status_code == 403 and "admin role" in refused.json()["detail"]
    assert client.post("/api/v1/agents/import:x/heartbeat", json={}, headers=admin).status_code == 403


def test_open_registration_protects_registered_agents_and_names(open_store: Any, tmp_path: Path) -> None:
    app = create_app(settings(tmp_path), open_store())
    with TestClient(app) as client:
        a = client.post("/api/v1/agents/register", json={"name": "a", "hostname": "hv-a", "machine_id": "m"}).json()
        assert a["credential"]
        again = client.post("/api/v1/agents/register", json={"name": "a", "hostname": "hv-a", "machine_id": "m"})
        assert again.status_code == 403 and "registration is open" in again.json()["detail"]
        own = client.post("/api/v1/agents/register", json={"name": "a", "hostname": "hv-a", "machine_id": "m"},
                          headers=bearer(a["credential"]))  # fmt: skip
        assert own.status_code == 200
        clash = client.post("/api/v1/agents/register", json={"name": "a", "hostname": "hv-z", "machine_id": "z"})
        assert clash.status_code == 409 and "belongs to agent" in clash.json()["detail"]
        hb = client.post(f"/api/v1/agents/{a['agent_id']}/heartbeat", json={})
        assert hb.status_code == 401  # the credential is still required after an open registration


def test_control_url_checks() -> None:
    none = ControlNetworks([])
    nets = ControlNetworks(["10.1.0.0/16", "hv-7.mgmt"])
    assert check_control_url("http://10.0.0.5:9477/", "10.0.0.5", none) == "http://10.0.0.5:9477"
    assert check_control_url("https://[::1]:9477", "::1", none) == "https://[::1]:9477"
    assert check_control_url("http://10.0.0.5:9477", "::ffff:10.0.0.5", none)  # IPv4-mapped peer
    assert check_control_url("http://10.1.2.3:9477", "192.0.2.1", nets)
    assert check_control_url("http://HV-7.mgmt:9477", "192.0.2.1", nets)
    assert check_control_url("", "10.0.0.5", none) == ""
    refused = {
        "http://10.0.0.6:9477": "neither the address",
        "http://127.0.0.1:9477": "neither the address",
        "http://metadata.internal/": "not listed",
        "ftp://10.0.0.5/": "scheme",
        "http://user:pw@10.0.0.5:9477": "user name",
        "http://10.0.0.5:9477/?x=1": "query",
        "http://10.0.0.5:9477/#f": "fragment",
        "http://10.0.0.5:0": "port",
        "http://10.0.0.5:99999": "not a URL",
        "http://10.0.0.5 :1/": "spaces",
    }
    for url, why in refused.items():
        with pytest.raises(ValueError, match=why):
            check_control_url(url, "10.0.0.5", none)
    with pytest.raises(ConfigError, match="neither a CIDR"):
        ControlNetworks(["not a net!"])


def test_refused_control_urls_stay_empty_and_show_in_the_fleet(open_store: Any, tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, token=BOOT, control_networks=["10.9.0.0/16"]), open_store())
    with TestClient(app) as client:
        a = register(client, "hv-a", control_url="http://169.254.169.254/latest")
        assert a["control_url"] == "" and "control_networks" in a["control_url_error"]
        cred = bearer(a["credential"])
        hb = client.post(f"/api/v1/agents/{a['agent_id']}/heartbeat", json={"control_url": "http://10.9.1.1:9477"},
                         headers=cred).json()  # fmt: skip
        assert hb["control_url_error"] == ""
        admin = grant(app)
        row = client.get("/api/v1/agents", headers=admin).json()[0]
        assert row["control_url"] == "http://10.9.1.1:9477" and row["control_url_refused"] == 1
        hb = client.post(f"/api/v1/agents/{a['agent_id']}/heartbeat", json={"control_url": "http://10.8.0.1:1"},
                         headers=cred).json()  # fmt: skip
        assert "10.8.0.1" in hb["control_url_error"]
        detail = client.get(f"/api/v1/agents/{a['agent_id']}", headers=admin).json()
        assert detail["agent"]["control_url"] == "" and detail["status"]["control_url"] == ""
        assert detail["control_url_refused"] == 2 and "10.8.0.1" in detail["control_url_error"]
        assert "control_key" not in str(detail) and a["control_key"] not in str(detail)


def test_old_databases_gain_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE agents (id TEXT PRIMARY KEY, name TEXT NOT NULL, hostname TEXT NOT NULL, "
                 "machine_id TEXT NOT NULL, address TEXT NOT NULL DEFAULT '', group_name TEXT NOT NULL DEFAULT "
                 "'default', version TEXT NOT NULL DEFAULT '', mode TEXT NOT NULL DEFAULT '', heartbeat_s REAL NOT "
                 "NULL DEFAULT 10, registered_at REAL NOT NULL, last_seen REAL NOT NULL DEFAULT 0, status TEXT NOT "
                 "NULL DEFAULT '{}', config_version INTEGER NOT NULL DEFAULT 0, config_hash TEXT NOT NULL DEFAULT "
                 "'', config_doc TEXT NOT NULL DEFAULT '{}')")  # fmt: skip
    conn.execute("INSERT INTO agents (id, name, hostname, machine_id, registered_at) VALUES ('ag-1', 'a', 'h', 'm', 1)")
    conn.commit()
    conn.close()
    path.chmod(0o644)
    db = ControllerDB(path)
    ids = AgentIdentities(db)
    assert not ids.has_credential("ag-1") and ids.control_key("ag-1") is None
    issued = ids.issue("ag-1")
    assert AgentIdentities(db).agent_of(issued.credential) == "ag-1"
    assert path.stat().st_mode & 0o777 == 0o600  # it holds control keys
    db.close()
