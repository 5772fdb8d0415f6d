"""Destinations and distribution policies: stored, compiled per agent into the ``broker`` section, recompiled
when a VM moves (only the affected agents get a new version), previewed; every route declares its
permission, viewers only read, a project-bound operator stays in its projects; heartbeats carry the
broker's figures and ``fleet top --by forwarded_bps`` ranks by them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.inventory.model import VM, Host, Interface, Project, Snapshot
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

VMS = [VM("v1", "web-01", "p-shop", "hv-a", "ACTIVE"), VM("v2", "db-01", "p-shop", "hv-b", "ACTIVE"),
       VM("v3", "mon-01", "p-ops", "hv-b", "ACTIVE")]  # fmt: skip
IFACES = [Interface("i1", "52:54:00:00:00:01", ("10.0.0.1",), "v1", device="tap1"),
          Interface("i2", "52:54:00:00:00:02", ("10.0.0.2",), "v2", device="tap2"),
          Interface("i3", "52:54:00:00:00:03", ("10.0.1.3",), "v3", device="tap3")]  # fmt: skip


def snapshot(vms: list[VM] = VMS) -> Snapshot:
    return Snapshot(source="test", taken_at=1, projects=[Project("p-shop", "shop"), Project("p-ops", "ops")],
                    hosts=[Host("hv-a", "hv-a"), Host("hv-b", "hv-b"), Host("hv-c", "hv-c")], vms=vms,
                    interfaces=IFACES)  # fmt: skip


IDS = {"name": "ids-1", "encap": "vxlan", "address": "192.0.2.10", "vni": 7, "max_bps": 5_000_000}
PCI = {"select": {"project": "shop", "vm": "web-*"}, "truncate": 128, "destinations": ["ids-1"]}


@pytest.fixture
def env(open_store: Any, tmp_path: Path) -> Iterator[SimpleNamespace]:
    settings = ServerSettings.model_validate({
        "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
        "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
    })  # fmt: skip
    app = create_app(settings, open_store())
    state = SimpleNamespace(snap=snapshot())
    with TestClient(app) as client:
        app.state.controller.inventory = lambda: state.snap
        creds = {}
        for host in ("hv-a", "hv-b", "hv-c"):
            body = {"name": f"agent-{host}", "hostname": host, "machine_id": f"m-{host}"}
            r = client.post("/api/v1/agents/register", json=body)
            assert r.status_code == 200
            creds[host] = (r.json()["agent_id"], {"Authorization": f"Bearer {r.json()['credential']}"})
        yield SimpleNamespace(app=app, client=client, state=state, creds=creds, admin=grant(app),
                              viewer=grant(app, "viewer"), shop=grant(app, "operator", ["shop"], name="shop-op"))  # fmt: skip


def versions(env: SimpleNamespace) -> dict[str, int]:
    return {a.hostname: a.config_version for a in env.app.state.controller.registry.all()}


def broker_of(env: SimpleNamespace, host: str) -> dict[str, Any] | None:
    ctl = env.app.state.controller
    rec = next(a for a in ctl.registry.all() if a.hostname == host)
    return ctl.config_for(rec).get("broker")  # type: ignore[no-any-return]


def test_compiled_into_the_broker_section_and_following_a_moved_vm(env: SimpleNamespace) -> None:
    c, admin = env.client, env.admin
    before = versions(env)
    assert broker_of(env, "hv-a") is None  # nothing defined: the overlay's broker section is left alone
    r = c.put("/api/v1/distribution/pci", json=PCI, headers=admin)
    assert r.status_code == 422 and "ids-1" in r.text  # its destination is not defined yet
    assert c.put("/api/v1/destinations/ids-1", json=IDS, headers=admin).status_code == 200
    assert c.put("/api/v1/distribution/pci", json=PCI, headers=admin).status_code == 200
    broker = broker_of(env, "hv-a")
    assert broker is not None and broker["enabled"] is True
    assert [d["name"] for d in broker["destinations"]] == ["ids-1"] and broker["destinations"][0]["vni"] == 7
    assert broker["rules"] == [{"name": "pci", "interfaces": ["tap1"], "macs": ["52:54:00:00:00:01"], "bpf": None,
                                "direction": "both", "truncate": 128, "vlan": "keep", "destinations": ["ids-1"]}]  # fmt: skip
    assert broker_of(env, "hv-b") == {"enabled": False, "destinations": [], "rules": []}
    from cloudtap.broker.config import BrokerSection  # what the agent validates it with

    assert BrokerSection.model_validate(broker).rules[0].truncate == 128
    # a second policy on the same VM: both rules apply
    second = {"select": {"vm": "*-01"}, "direction": "to_vm", "destinations": ["ids-1"], "priority": 5}
    assert c.put("/api/v1/distribution/all-in", json=second, headers=admin).status_code == 200
    assert [r["name"] for r in broker_of(env, "hv-a")["rules"]] == ["all-in", "pci"]  # type: ignore[index]
    shown = c.get("/api/v1/distribution/pci", headers=env.viewer).json()
    assert [(x["host"], x["vms"]) for x in shown["compiled"]] == [("hv-a", ["web-01"])]
    assert {p["name"]: p["vms"] for p in c.get("/api/v1/distribution", headers=env.viewer).json()} == {
        "all-in": 3,
        "pci": 1,
    }
    # web-01 moves from hv-a to hv-c: only those two agents get a new version
    settled = versions(env)
    assert all(settled[h] > before[h] for h in settled)
    env.state.snap = snapshot([VM("v1", "web-01", "p-shop", "hv-c", "ACTIVE"), *VMS[1:]])
    env.app.state.controller.sync()
    moved = versions(env)
    assert (
        moved["hv-b"] == settled["hv-b"]
        and moved["hv-a"] > settled["hv-a"]
        and moved["hv-c"] > settled["hv-c"]
    )
    assert [r["name"] for r in broker_of(env, "hv-c")["rules"]] == ["all-in", "pci"]  # type: ignore[index]
    assert [r["name"] for r in broker_of(env, "hv-a")["rules"]] == []  # type: ignore[index]
    # a destination in use cannot go; a policy can
    assert c.delete("/api/v1/destinations/ids-1", headers=admin).status_code == 409
    assert c.delete("/api/v1/distribution/pci", headers=admin).status_code == 200
    assert c.delete("/api/v1/distribution/all-in", headers=admin).status_code == 200
    assert c.delete("/api/v1/distribution/pci", headers=admin).status_code == 404
    assert c.delete("/api/v1/destinations/ids-1", headers=admin).status_code == 200
    assert c.get("/api/v1/destinations", headers=env.viewer).json() == []


def test_the_group_overlay_keeps_its_fuse(env: SimpleNamespace) -> None:
    ctl = env.app.state.controller
    from cloudtap.server.controller.distribution import Destination, DistributionPolicy
    from cloudtap.server.controller.distribution_compiler import broker_section, compile_distribution

    comp = compile_distribution(env.state.snap, [DistributionPolicy(name="pci", **PCI)], [Destination(**IDS)],
                                ctl.registry.all())  # fmt: skip
    agent = next(a for a in ctl.registry.all() if a.hostname == "hv-a")
    section = broker_section(
        comp.agents[agent.id], {"broker": {"fuse": {"max_uplink_bps": 10**9}, "enabled": False}}
    )
    assert section["fuse"] == {"max_uplink_bps": 10**9} and section["enabled"] is True


def test_a_port_without_a_known_name_leaves_the_macs_to_decide(env: SimpleNamespace) -> None:
    from cloudtap.server.controller.distribution import Destination, DistributionPolicy
    from cloudtap.server.controller.distribution_compiler import compile_distribution

    nameless = [Interface("i1", "52:54:00:00:00:01", ("10.0.0.1",), "v1")]
    snap = Snapshot(source="t", taken_at=1, projects=[Project("p-shop", "shop")], hosts=[Host("hv-a", "hv-a")],
                    vms=VMS[:1], interfaces=nameless)  # fmt: skip
    agents = env.app.state.controller.registry.all()
    policy = DistributionPolicy(name="pci", **PCI)
    (rule,) = [r for c in compile_distribution(snap, [policy], [Destination(**IDS)], agents).agents.values()
               for r in c.rules]  # fmt: skip
    assert rule.interfaces == ["*"] and rule.macs == ["52:54:00:00:00:01"]
    seen = {a.id: {"52:54:00:00:00:01": "vnet7"} for a in agents}  # the agent reports the port's name
    (rule,) = [r for c in compile_distribution(snap, [policy], [Destination(**IDS)], agents, seen).agents.values()
               for r in c.rules]  # fmt: skip
    assert rule.interfaces == ["vnet7"]


def test_preview_shows_the_agents_that_would_change(env: SimpleNamespace) -> None:
    c, admin = env.client, env.admin
    assert c.put("/api/v1/destinations/ids-1", json=IDS, headers=admin).status_code == 200
    before = versions(env)
    r = c.post("/api/v1/distribution/pci/preview", json=PCI, headers=admin)
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["exists"] is False and p["changed"] and '+  "truncate": 128' in p["diff"]
    assert [(a["host"], a["added"], a["enabled_after"]) for a in p["agents"]] == [("hv-a", ["web-01"], True)]
    assert versions(env) == before  # nothing stored
    assert c.post("/api/v1/distribution/pci/preview?delete=true", headers=admin).status_code == 404


def test_routes_declare_their_permissions_and_keep_operators_to_their_projects(env: SimpleNamespace) -> None:
    c = env.client
    reads = ("/api/v1/destinations", "/api/v1/distribution", "/api/v1/distribution/pci")
    changes = (("PUT", "/api/v1/destinations/ids-1", IDS), ("DELETE", "/api/v1/destinations/ids-1", None),
               ("PUT", "/api/v1/distribution/pci", PCI), ("DELETE", "/api/v1/distribution/pci", None),
               ("POST", "/api/v1/distribution/pci/preview", PCI),
               ("POST", "/api/v1/policies/dry-run", {"kind": "distribution", "policy": {"name": "pci", **PCI}}))  # fmt: skip
    for path in reads:
        assert c.get(path).status_code == 401, path
    for method, path, body in changes:
        assert c.request(method, path, json=body).status_code == 401, path
        r = c.request(method, path, json=body, headers=env.viewer)
        assert r.status_code == 403 and "lacks the config:write" in r.json()["detail"], path
    assert c.get("/api/v1/destinations", headers=env.viewer).status_code == 200
    # destinations serve every project: a project-bound operator may not change them
    r = c.put("/api/v1/destinations/ids-1", json=IDS, headers=env.shop)
    assert r.status_code == 403 and "every project" in r.json()["detail"]
    assert c.put("/api/v1/destinations/ids-1", json=IDS, headers=env.admin).status_code == 200
    assert c.put("/api/v1/distribution/pci", json=PCI, headers=env.shop).status_code == 200
    for select in ({"project": "ops"}, {"project": "sh*"}, {"vm": "web-01"}):
        body = {**PCI, "select": select}
        for method, path, doc in (("PUT", "/api/v1/distribution/other", body),
                                  ("POST", "/api/v1/distribution/other/preview", body),
                                  ("POST", "/api/v1/policies/dry-run",
                                   {"kind": "distribution", "policy": {"name": "other", **body}}),
                                  ("POST", "/api/v1/policies/dry-run",
                                   {"kind": "capture", "policy": {"name": "other", "select": select}})):  # fmt: skip
            r = c.request(method, path, json=doc, headers=env.shop)
            assert r.status_code == 403, (method, path, select, r.text)
    ok = c.post("/api/v1/policies/dry-run", headers=env.shop,
                json={"kind": "distribution", "policy": {"name": "pci", **PCI}})  # fmt: skip
    assert ok.status_code == 200, ok.text
    # an admin's policy over every project cannot be replaced or deleted by the project-bound operator
    assert (
        c.put("/api/v1/distribution/wide", json={**PCI, "select": {}}, headers=env.admin).status_code == 200
    )
    assert c.delete("/api/v1/distribution/wide", headers=env.shop).status_code == 403
    refused = [r["action"] for r in env.app.state.audit.read() if r["outcome"] == "refused"]
    assert "destination.put" in refused and "distribution.put" in refused and "distribution.delete" in refused


def test_bad_documents_are_422_naming_the_field(env: SimpleNamespace) -> None:
    c, admin = env.client, env.admin
    r = c.put("/api/v1/destinations/ids-1", json={"encap": "raw"}, headers=admin)
    assert r.status_code == 422 and "interface" in r.text
    r = c.put("/api/v1/destinations/Bad Name", json=IDS, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "path"
    r = c.put("/api/v1/distribution/pci", json={**PCI, "bpf": "tcp port"}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "bpf"]
    r = c.put("/api/v1/distribution/pci", json={**PCI, "truncate": 10}, headers=admin)
    assert r.status_code == 422 and "14-byte" in r.text
    r = c.put("/api/v1/destinations/ids-1", json={**IDS, "key": 5}, headers=admin)
    assert r.status_code == 422 and "gre only" in r.text
    r = c.put("/api/v1/destinations/ids-1", json={**IDS, "source": "2001:db8::1"}, headers=admin)
    assert r.status_code == 422 and "same IP version" in r.text
    r = c.post("/api/v1/policies/dry-run", json={"kind": "storage", "policy": {"name": "x"}}, headers=admin)
    assert r.status_code == 422 and "store_packets" in r.text
    r = c.post("/api/v1/policies/dry-run", json={"kind": "capture", "policy": {"name": "x"}, "time_from": "soon"},
               headers=admin)  # fmt: skip
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body"


def test_heartbeats_carry_the_broker_figures_and_fleet_ranks_by_them(env: SimpleNamespace) -> None:
    c = env.client

    def beat(host: str, body: dict[str, Any]) -> Any:
        agent_id, headers = env.creds[host]
        return c.post(f"/api/v1/agents/{agent_id}/heartbeat", json=body, headers=headers)

    old = beat("hv-c", {"captured_packets": 1})
    assert old.status_code == 200, old.text  # an agent without a broker: defaults
    for host, step in (("hv-a", 1_000_000), ("hv-b", 10)):
        for i in range(3):
            body = {"forwarded_packets": i * 10, "forwarded_bytes": i * step, "forward_drops": i,
                    "broker_fuse_open": host == "hv-b",
                    "broker": {"ids-1": {"packets": i * 10, "bytes": i * step, "drops": i}}}  # fmt: skip
            assert beat(host, body).status_code == 200
    rows = c.get(
        "/api/v1/fleet/top", params={"by": "forwarded_bps", "window": "1h"}, headers=env.viewer
    ).json()
    assert [r["host"] for r in rows] == ["hv-a", "hv-b", "hv-c"]
    assert rows[0]["forwarded_bps"] > rows[1]["forwarded_bps"] > 0 and rows[2]["forwarded_bps"] == 0
    assert rows[0]["forward_drops"] == 2 and rows[1]["broker_fuse_open"] is True
    by_drops = c.get("/api/v1/fleet/top", params={"by": "forward_drops"}, headers=env.viewer)
    assert by_drops.status_code == 200
    status = c.get("/api/v1/agents/agent-hv-a", headers=env.viewer).json()["status"]
    assert status["broker"] == {"ids-1": {"packets": 20, "bytes": 2_000_000, "drops": 2}}
    metrics = c.get("/metrics", headers=env.admin).text
    assert "cloudtap_server_controller_agents_forwarded_bytes 2.00002e+06" in metrics
    assert "cloudtap_server_controller_agents_forward_drops 4.0" in metrics
    assert "cloudtap_server_controller_agents_broker_fuse_open 1.0" in metrics
