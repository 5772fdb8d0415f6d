"""Agents against a cloud inventory (a static file standing in for the cloud API): what they disagree on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.inventory.connectors.agents import seen_addresses, snapshot_from_agents
from cloudtap.inventory.connectors.static import parse_static_yaml
from cloudtap.inventory.disagreements import Disagreement, compare
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

WEB, DB, ROGUE = "7d3e9c2a-41f6-4b8e-9a0d-2c5f8e1b6a93", "8e4f0d3b-52a7-4c9f-8b1e-3d6a9f2c7b04", "ffffffff-0000-4000-8000-0000000000ff"
DEMO = "c2e4a6b8d0f24e6a8c0e2f4a6b8d0f21"
CLOUD = f"""
projects: [{{name: demo, key: {DEMO}}}, {{name: ops, key: ops-id}}]
hosts: [{{name: hv-01}}, {{name: hv-02}}]
vms:
  - {{name: web-frontend-1, key: {WEB}, project: {DEMO}, host: hv-02,
      interfaces: [{{mac: "fa:16:3e:5d:21:8c", ips: [10.0.0.17]}}]}}
  - {{name: db-primary, key: {DB}, project: ops-id, host: hv-01,
      interfaces: [{{mac: "fa:16:3e:a4:07:1b", ips: [10.0.0.21]}}]}}
"""
NOVA = {"project_id": DEMO, "project_name": "demo"}
HEARTBEAT: dict[str, Any] = {
    "interfaces": [
        {"name": "tap3f2a9c1e-7b", "mac": "fa:16:3e:5d:21:8c", "domain": "instance-0000002a", "uuid": WEB,
         "ips": [{"ip": "10.0.0.17", "first_seen_ns": 1, "last_seen_ns": 2},
                 {"ip": "10.0.0.99", "first_seen_ns": 3, "last_seen_ns": 4}]},
        {"name": "tapa1b2c3d4-e5", "mac": "fa:16:3e:a4:07:1b", "domain": "instance-0000002b", "uuid": DB,
         "ips": ["10.0.0.21"]},
        {"name": "tap0c9d8e7f-61", "mac": "fa:16:3e:3c:9e:52", "domain": "instance-0000002b", "uuid": DB},
        {"name": "tapff", "mac": "fa:16:3e:00:00:ff", "domain": "instance-000000ff", "uuid": ROGUE,
         "ips": ["10.0.0.250"]},
    ],
    "vms": [
        {"domain": "instance-0000002a", "uuid": WEB, "name": "web-frontend-1", **NOVA},
        {"domain": "instance-0000002b", "uuid": DB, "name": "db-primary", **NOVA},
        {"domain": "instance-000000ff", "uuid": ROGUE},
    ],
}  # fmt: skip
EXPECTED = [
    Disagreement("host_mismatch", "hv-01", WEB, "web-frontend-1", DEMO, cloud="hv-02"),
    Disagreement("project_mismatch", "hv-01", DB, "db-primary", DEMO, cloud="ops"),
    Disagreement("unknown_vm", "hv-01", ROGUE, "instance-000000ff", ""),
    Disagreement("unlisted_ip", "hv-01", WEB, "web-frontend-1", DEMO, mac="fa:16:3e:5d:21:8c", ip="10.0.0.99",
                 cloud="10.0.0.17", first_seen_ns=3, last_seen_ns=4),
    Disagreement("unknown_interface", "hv-01", DB, "db-primary", DEMO, mac="fa:16:3e:3c:9e:52"),
]  # fmt: skip


def _key(d: Disagreement) -> tuple[str, str, str]:
    return (d.kind, d.vm, d.ip)


def test_compare_finds_each_kind_once() -> None:
    report = {"agent_id": "a1", "host": "hv-01", **HEARTBEAT}
    observed = snapshot_from_agents([report])
    found = compare(observed, parse_static_yaml(CLOUD, "cloud.yaml"), seen_addresses([report]))
    assert sorted(found, key=_key) == sorted(EXPECTED, key=_key)
    assert compare(observed, observed) == []  # agreeing with itself


def test_matching_by_name_when_the_cloud_keys_differ() -> None:
    cloud = parse_static_yaml("hosts: [{name: hv-01}]\nvms: [{name: web-frontend-1, host: hv-01, interfaces: [{mac: 'fa:16:3e:5d:21:8c'}]}]", "c")
    report = {"agent_id": "a1", "host": "hv-01", "interfaces": [HEARTBEAT["interfaces"][0]], "vms": HEARTBEAT["vms"][:1]}
    found = compare(snapshot_from_agents([report]), cloud)
    assert [(d.kind, d.ip) for d in found] == [("unlisted_ip", "10.0.0.17"), ("unlisted_ip", "10.0.0.99")]


def test_disagreements_route(tmp_path: Path) -> None:
    (tmp_path / "cloud.yaml").write_text(CLOUD)
    settings = ServerSettings.model_validate(
        {"inventory": {"static_file": str(tmp_path / "cloud.yaml")},
         "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
         "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")}})  # fmt: skip
    app = create_app(settings, None)  # type: ignore[arg-type]
    admin, demo, ops = grant(app), grant(app, "viewer", ["demo"]), grant(app, "viewer", ["ops"])
    with TestClient(app) as client:
        url = "/api/v1/inventory/disagreements"
        assert client.get(url).status_code == 401
        assert client.get(url, headers=admin).json()["items"] == []  # no agent yet
        reg = client.post("/api/v1/agents/register", json={"name": "agent-hv-01", "hostname": "hv-01",
                                                           "machine_id": "m-01"}).json()  # fmt: skip
        agent = {"Authorization": f"Bearer {reg['credential']}"}
        sent = client.post(f"/api/v1/agents/{reg['agent_id']}/heartbeat", json=HEARTBEAT, headers=agent)
        assert sent.status_code == 200, sent.text
        body = client.get(url, headers=admin).json()
        assert body["reference_sources"] == ["static"] and body["agents"] == 1 and body["total"] == 5
        got = sorted((Disagreement(**d) for d in body["items"]), key=_key)
        assert got == sorted(EXPECTED, key=_key)
        assert body["counts"] == {"unknown_vm": 1, "host_mismatch": 1, "project_mismatch": 1,
                                  "unknown_interface": 1, "unlisted_ip": 1}  # fmt: skip
        only = client.get(url, params={"kind": "unlisted_ip"}, headers=admin).json()
        assert [d["ip"] for d in only["items"]] == ["10.0.0.99"]
        assert client.get(url, params={"kind": "nope"}, headers=admin).status_code == 422
        mine = client.get(url, headers=demo).json()  # a project's viewer: its VMs only, no fleet facts
        assert mine["total"] == 4 and "agents" not in mine and {d["project"] for d in mine["items"]} == {DEMO}
        assert client.get(url, headers=ops).json()["items"] == []
