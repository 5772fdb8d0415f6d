"""Controller and fleet routes declare their permissions, keep project-scoped operators to their projects'
hosts and policies, and audit every change and every refusal of one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.inventory.model import VM, Host, Project, Snapshot
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

SNAP = Snapshot(
    source="test", taken_at=1,
    projects=[Project("p-shop", "shop"), Project("p-ops", "ops")],
    hosts=[Host("hv-a", "hv-a"), Host("hv-b", "hv-b"), Host("hv-c", "hv-c")],
    vms=[VM("v1", "web-01", "p-shop", "hv-a", "ACTIVE"), VM("v2", "db-01", "p-shop", "hv-b", "ACTIVE"),
         VM("v3", "mon-01", "p-ops", "hv-b", "ACTIVE")],
)  # fmt: skip


@pytest.fixture
def env(open_store: Any, tmp_path: Path) -> Iterator[SimpleNamespace]:
    settings = ServerSettings.model_validate({
        "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
        "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
    })  # fmt: skip
    app = create_app(settings, open_store())
    with TestClient(app) as client:
        app.state.controller.inventory = lambda: SNAP
        for host in ("hv-a", "hv-b", "hv-c"):
            body = {"name": f"agent-{host}", "hostname": host, "machine_id": f"m-{host}"}
            assert client.post("/api/v1/agents/register", json=body).status_code == 200
        yield SimpleNamespace(app=app, client=client, admin=grant(app), viewer=grant(app, "viewer"),
                              shop=grant(app, "operator", ["shop"], name="shop-op"))  # fmt: skip


def audit(env: SimpleNamespace) -> list[dict[str, Any]]:
    return env.app.state.audit.read()  # type: ignore[no-any-return]


def test_every_route_needs_a_user_and_viewers_only_read(env: SimpleNamespace) -> None:
    c = env.client
    for path in ("/api/v1/agents", "/api/v1/groups", "/api/v1/policies", "/api/v1/fleet/top", "/api/v1/fleet/hosts",
                 "/api/v1/fleet/stale", "/api/v1/controller/compiled", "/api/v1/diagnose/vm/web-01"):  # fmt: skip
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers=env.viewer).status_code == 200, path
    for method, path in (("POST", "/api/v1/agents/agent-hv-a/capture/stop"), ("DELETE", "/api/v1/agents/agent-hv-a"),
                         ("PUT", "/api/v1/policies/p"), ("POST", "/api/v1/controller/sync")):  # fmt: skip
        r = c.request(method, path, headers=env.viewer, json={})
        assert r.status_code == 403 and "lacks the" in r.json()["detail"], path
    assert c.post("/api/v1/controller/sync", headers=env.shop).status_code == 403  # inventory:sync is global only
    assert c.post("/api/v1/controller/sync", headers=env.admin).status_code == 200


def test_a_project_operator_acts_only_on_hosts_of_their_projects(env: SimpleNamespace) -> None:
    c = env.client
    ok = c.post("/api/v1/agents/agent-hv-a/capture/stop", headers=env.shop)
    assert ok.status_code == 200, ok.text
    mixed = c.post("/api/v1/agents/agent-hv-b/capture/stop", headers=env.shop)
    assert mixed.status_code == 403 and "outside your scope (ops)" in mixed.json()["detail"]
    empty = c.delete("/api/v1/agents/agent-hv-c", headers=env.shop)
    assert empty.status_code == 403 and "runs no VM of your projects" in empty.json()["detail"]
    moved = c.put("/api/v1/agents/agent-hv-b/group", json={"group": "lab"}, headers=env.shop)
    assert moved.status_code == 403
    for method, path, body in (("PUT", "/api/v1/groups/default/config", {"overlay": {}}),
                               ("POST", "/api/v1/groups/default/capture/stop", None)):  # fmt: skip
        r = c.request(method, path, json=body, headers=env.shop)
        assert r.status_code == 403 and "every project" in r.json()["detail"], path
    assert c.put("/api/v1/agents/agent-hv-a/group", json={"group": "lab"}, headers=env.shop).status_code == 200
    assert c.delete("/api/v1/agents/agent-hv-b", headers=env.admin).status_code == 200
    records = audit(env)
    refused = [r for r in records if r["outcome"] == "refused"]
    assert [r["action"] for r in refused] == ["agent.capture.stop", "agent.delete", "agent.group", "group.config",
                                              "group.capture.stop"]  # fmt: skip
    assert all(r["actor"] == "shop-op" and r["reason"] for r in refused)
    done = [(r["action"], r["actor"]) for r in records if r["outcome"] == "ok" and r["action"] != "agent.register"]
    assert done == [("agent.capture.stop", "shop-op"), ("agent.group", "shop-op"),
                    ("agent.delete", done[-1][1])]  # fmt: skip
    assert done[-1][1].startswith("admin-")


def test_a_project_operator_writes_only_policies_of_their_projects(env: SimpleNamespace) -> None:
    c = env.client
    assert c.put("/api/v1/policies/global", json={"select": {}}, headers=env.admin).status_code == 200
    mine = c.put("/api/v1/policies/shop-web", json={"select": {"project": "shop", "vm": "web-*"}}, headers=env.shop)
    assert mine.status_code == 200, mine.text
    for name, select, why in (("all", {}, "every project"), ("glob", {"project": "s*"}, "pattern"),
                              ("ops", {"project": "ops"}, "outside your scope"),
                              ("global", {"project": "shop"}, "every project")):  # fmt: skip
        r = c.put(f"/api/v1/policies/{name}", json={"select": select}, headers=env.shop)
        assert r.status_code == 403 and why in r.json()["detail"], (name, r.text)
    assert c.delete("/api/v1/policies/global", headers=env.shop).status_code == 403
    assert c.delete("/api/v1/policies/shop-web", headers=env.shop).status_code == 200
    assert c.delete("/api/v1/policies/nope", headers=env.admin).status_code == 404
    actions = [(r["action"], r["outcome"], r.get("policy")) for r in audit(env) if r["action"].startswith("policy.")]
    assert actions == [("policy.put", "ok", "global"), ("policy.put", "ok", "shop-web"),
                       ("policy.put", "refused", "all"), ("policy.put", "refused", "glob"),
                       ("policy.put", "refused", "ops"), ("policy.put", "refused", "global"),
                       ("policy.delete", "refused", "global"), ("policy.delete", "ok", "shop-web"),
                       ("policy.delete", "failed", "nope")]  # fmt: skip


def test_group_config_changes_are_audited_and_local_keys_refused(env: SimpleNamespace) -> None:
    c = env.client
    ok = c.put("/api/v1/groups/lab/config", json={"overlay": {"limits": {"max_pps": 5}}}, headers=env.admin)
    assert ok.status_code == 200
    for overlay in ({"control": {"listen": "0.0.0.0"}}, {"output": {"server_url": "http://evil:1"}}):
        bad = c.put("/api/v1/groups/lab/config", json={"overlay": overlay}, headers=env.admin)
        assert bad.status_code == 422 and "agent's own config only" in bad.json()["detail"][0]["msg"]
    stop = c.post("/api/v1/groups/default/capture/stop", headers=env.admin).json()
    assert len(stop["commands"]) == 3
    actions = [(r["action"], r["outcome"]) for r in audit(env) if r["action"].startswith("group.")]
    assert actions == [("group.config", "ok"), ("group.config", "failed"), ("group.config", "failed"),
                       ("group.capture.stop", "ok")]  # fmt: skip
