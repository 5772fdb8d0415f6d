"""Destinations and distribution policies in a real PostgreSQL shared by two server apps: written through one,
compiled into the agent's ``broker`` section and read through the other; deleted through the other, gone on
the first. Also the storage itself: two :class:`Distribution` views of one database follow each other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.inventory.model import VM, Host, Interface, Project, Snapshot
from cloudtap.server.api.app import create_app
from cloudtap.server.controller.db import open_controller_db
from cloudtap.server.controller.distribution import Destination, Distribution, DistributionPolicy
from cloudtap.server.settings import ServerSettings
from postgres_cluster import eventually, postgres_cluster, postgres_url  # noqa: F401 - fixtures

pytest.importorskip("psycopg")

BOOT = "bootstrap-token"
AGENT = {"name": "agent-hv1", "hostname": "hv1", "machine_id": "m-hv1"}
SNAP = Snapshot(source="test", taken_at=1, projects=[Project("p", "shop")], hosts=[Host("hv1", "hv1")],
                vms=[VM("v1", "db-01", "p", "hv1", "ACTIVE")],
                interfaces=[Interface("i1", "52:54:00:00:00:01", ("10.0.0.1",), "v1", device="tap1")])  # fmt: skip


def settings(tmp: Path, url: str) -> ServerSettings:
    tmp.mkdir(parents=True, exist_ok=True)
    return ServerSettings.model_validate({
        "inventory": {"enabled": False},
        "controller": {"database_url": url, "token": BOOT, "db_path": str(tmp / "unused.sqlite")},
        "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")},
    })  # fmt: skip


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Iterator[tuple[TestClient, TestClient]]:  # noqa: F811
    a, b = (
        create_app(settings(tmp_path / "a", postgres_url), None),
        create_app(settings(tmp_path / "b", postgres_url), None),
    )
    with TestClient(a) as ca, TestClient(b) as cb:
        for c in (ca, cb):
            c.app.state.controller.inventory = lambda: SNAP
            listener = c.app.state.controller.db._listener  # type: ignore[attr-defined]
            assert listener is not None and listener.connected.wait(5)
        yield ca, cb


def test_two_views_of_one_database_follow_each_other(postgres_url: str) -> None:  # noqa: F811
    a, b = open_controller_db(postgres_url), open_controller_db(postgres_url)
    try:
        da, db_ = Distribution(a), Distribution(b)
        da.put(Destination(name="ids-1", address="2001:db8::10", encap="erspan3", session_id=9))
        da.put(DistributionPolicy(name="pci", destinations=["ids-1"], select={"vm": "db-*"}))  # type: ignore[arg-type]
        assert eventually(lambda: db_.policy("pci") is not None and db_.destination("ids-1") is not None)
        assert db_.destination("ids-1").session_id == 9 and db_.users_of("ids-1") == ["pci"]  # type: ignore[union-attr]
        assert db_.delete("policy", "pci") and not db_.delete("policy", "pci")
        assert eventually(lambda: da.policy("pci") is None) and da.destination("ids-1") is not None
    finally:
        a.close()
        b.close()


def test_written_through_one_server_compiled_and_read_through_the_other(
    servers: tuple[TestClient, TestClient],
) -> None:
    a, b = servers
    reg = a.post("/api/v1/agents/register", json=AGENT, headers={"Authorization": f"Bearer {BOOT}"}).json()
    agent_id, cred = reg["agent_id"], {"Authorization": f"Bearer {reg['credential']}"}
    admin_a, admin_b = grant(a.app, "admin"), grant(b.app, "admin")
    assert (
        a.put("/api/v1/destinations/ids-1", json={"address": "192.0.2.10"}, headers=admin_a).status_code
        == 200
    )
    policy = {"select": {"vm": "db-*"}, "destinations": ["ids-1"], "truncate": 96}
    assert a.put("/api/v1/distribution/pci", json=policy, headers=admin_a).status_code == 200

    def broker_on_b() -> Any:
        doc = b.get(f"/api/v1/agents/{agent_id}/config", headers=cred).json()
        return doc.get("broker") if doc.get("broker", {}).get("rules") else None

    broker = eventually(broker_on_b)
    assert broker["rules"][0]["interfaces"] == ["tap1"] and broker["rules"][0]["truncate"] == 96
    listed = eventually(lambda: b.get("/api/v1/distribution", headers=admin_b).json() or None)
    assert [p["name"] for p in listed] == ["pci"]
    assert b.delete("/api/v1/distribution/pci", headers=admin_b).status_code == 200
    assert eventually(lambda: a.get("/api/v1/distribution", headers=admin_a).json() == [])
    assert eventually(
        lambda: a.get(f"/api/v1/agents/{agent_id}/config", headers=cred).json()["broker"]["rules"] == []
    )
