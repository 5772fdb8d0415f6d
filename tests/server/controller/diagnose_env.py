"""A real server (``create_app``, chDB store, lifespans via TestClient) with one registered agent on the host
of VM ``web-01``, for the "why no data?" tests: helpers to heartbeat, ship flow batches and diagnose."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi.testclient import TestClient

from cloudtap.meter.records import flows_to_arrow
from cloudtap.schema.address import from_text
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.server.settings import ServerSettings
from cloudtap.ship.wire import encode_batch

NS = 1_000_000_000
AGENT = "agent-hv-a"
WEB_IP, WEB_MAC = "10.10.1.5", "fa:16:3e:00:00:01"
INVENTORY_CSV = (
    "name,project,host,ip,mac,network,subnet,cidr\n"
    f"web-01,shop,hv-a,{WEB_IP},{WEB_MAC},net,sub,10.10.1.0/24\n"
    "db-01,shop,hv-a,10.10.1.6,fa:16:3e:00:00:02,net,sub,10.10.1.0/24\n"
)


def settings(tmp_path: Path, database: str, **storage: Any) -> ServerSettings:
    (tmp_path / "inventory.csv").write_text(INVENTORY_CSV)
    return ServerSettings.model_validate({
        "storage": {"database": database, **storage},
        "inventory": {"static_file": str(tmp_path / "inventory.csv"), "learn_from_agents": False},
        "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
        "ingest": {"wal_dir": str(tmp_path / "wal")},
        "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
    })  # fmt: skip


def flows(client_ip: str, server_ip: str, vm_mac: str, n: int = 8, seq: int = 1) -> pa.Table:
    """``n`` flow records of the last minutes between two IPs, as agent ``AGENT`` ships them."""
    now_s = int(time.time())
    f = np.zeros(n, FLOW_DTYPE)
    f["client_hi"], f["client_lo"] = from_text(client_ip)
    f["server_hi"], f["server_lo"] = from_text(server_ip)
    f["ip_ver"], f["proto"], f["server_port"] = 4, 6, 443
    f["first_ns"] = f["start_ns"] = (now_s - 120) * NS
    f["last_ns"] = f["first_ns"] + 5 * NS
    f["client_port"] = np.arange(n) + 40000
    for side in ("c2s", "s2c"):
        f[f"packets_{side}"] = 3
        f[f"bytes_{side}"] = f[f"l2_bytes_{side}"] = 300
    f["close_type"] = f["side_rule"] = 1
    f["flow_id"] = np.arange(1, n + 1) + seq * 1_000_000
    table = flows_to_arrow(f)
    for name, value in (("interface_name", "tap0"), ("vm_domain", ""), ("vm_mac", vm_mac), ("agent_id", AGENT)):
        table = table.append_column(name, pa.array([value] * n, pa.string()))
    return table


@dataclass
class Env:
    """The app, its client, the agent's id and credential headers, an admin's headers."""

    app: Any
    client: TestClient
    agent_id: str
    agent: dict[str, str]
    admin: dict[str, str]

    def heartbeat(self, **figures: Any) -> None:
        body = {"capturing": True, "version": "test", **figures}
        r = self.client.post(f"/api/v1/agents/{self.agent_id}/heartbeat", json=body, headers=self.agent)
        assert r.status_code == 200, r.text

    def ship(self, seq: int, tables: dict[str, pa.Table]) -> Any:
        return self.client.post("/api/v1/ingest", content=encode_batch(AGENT, seq, tables), headers=self.agent)

    def why(self, vm: str = "web-01") -> dict[str, Any]:
        r = self.client.get(f"/api/v1/diagnose/vm/{vm}", headers=self.admin)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer


def register(client: TestClient) -> tuple[str, dict[str, str]]:
    body = {"name": AGENT, "hostname": "hv-a", "machine_id": "m-hv-a"}
    r = client.post("/api/v1/agents/register", json=body)
    assert r.status_code == 200, r.text
    return r.json()["agent_id"], {"Authorization": f"Bearer {r.json()['credential']}"}


def first_broken(d: dict[str, Any]) -> dict[str, Any]:
    """The first broken step, checked to be the answer's ``broken`` and to carry what to do."""
    step: dict[str, Any] = next(s for s in d["steps"] if s["status"] == "broken")
    assert d["broken"] == step["step"] and d["summary"] == step["detail"] and d["fix"] == step["fix"] and step["fix"]
    return step
