"""Without a cloud API, the inventory learns hosts and VMs from the agents' heartbeats."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings


def test_heartbeats_teach_the_inventory_hosts_and_vms(open_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = ServerSettings.model_validate({"controller": {"db_path": str(tmp_path / "ctl.sqlite")}})
    app = create_app(settings, open_store())
    admin = grant(app)  # the inventory routes need a user (inventory:read, inventory:sync)
    with TestClient(app) as client:
        first = client.post(
            "/api/v1/agents/register", json={"name": "hv-07", "hostname": "hv-07", "machine_id": "m-07"}
        ).json()
        agent, creds = first["agent_id"], {first["agent_id"]: {"Authorization": f"Bearer {first['credential']}"}}
        report = {
            "interfaces": [
                {"name": "vnet3", "mac": "52:54:00:AA:00:01", "domain": "db-01"},
                {"name": "vnet4", "mac": "52:54:00:aa:00:02", "domain": "backup-01"},
                {"name": "eth0"},  # the host's own port: no VM behind it
            ]
        }
        answer = client.post(f"/api/v1/agents/{agent}/heartbeat", json=report, headers=creds[agent])
        assert answer.status_code == 200, answer.text
        synced = client.post("/api/v1/inventory/sync", params={"connector": "agents"}, headers=admin)
        assert synced.status_code == 200 and synced.json()["results"][0]["ok"], synced.text
        vms = {v["name"]: v for v in client.get("/api/v1/inventory/vm", headers=admin).json()["items"]}
        assert set(vms) == {"db-01", "backup-01"} and all(v["source"] == "agents" for v in vms.values())
        hosts = [h["name"] for h in client.get("/api/v1/inventory/host", headers=admin).json()["items"]]
        assert hosts == ["hv-07"]
        ifaces = {i["key"] for i in client.get("/api/v1/inventory/interface", headers=admin).json()["items"]}
        assert ifaces == {"52:54:00:aa:00:01", "52:54:00:aa:00:02"}
        # the VM migrates: the next heartbeat comes from another host's agent
        second = client.post(
            "/api/v1/agents/register", json={"name": "hv-09", "hostname": "hv-09", "machine_id": "m-09"}
        ).json()
        other = second["agent_id"]
        creds[other] = {"Authorization": f"Bearer {second['credential']}"}
        for who, iface in ((agent, 1), (other, 0)):
            sent = client.post(f"/api/v1/agents/{who}/heartbeat", json={"interfaces": [report["interfaces"][iface]]},
                               headers=creds[who])  # fmt: skip
            assert sent.status_code == 200, sent.text
        client.post("/api/v1/inventory/sync", params={"connector": "agents"}, headers=admin)
        listed = client.get("/api/v1/inventory/vm", headers=admin).json()["items"]
        db = next(v for v in listed if v["name"] == "db-01")
        history = client.get("/api/v1/inventory/vm/history", params={"key": db["key"]}, headers=admin).json()
        history = history["intervals"]
        assert len(history) == 2  # hv-07 until the move, hv-09 since
