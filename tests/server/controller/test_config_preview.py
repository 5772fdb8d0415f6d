"""Previews of a change before it is applied: a group config's and a policy's diff, the keys' apply modes,
the agents and VMs touched. They need config:write (and the same project scope as the change itself),
and they store nothing."""

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
from cloudtap.server.controller.policy import Policy
from cloudtap.server.controller.preview import changed_leaves, unified
from cloudtap.server.settings import ServerSettings

SNAP = Snapshot(
    source="test", taken_at=1,
    projects=[Project("p-shop", "shop"), Project("p-ops", "ops")],
    hosts=[Host("hv-a", "hv-a"), Host("hv-b", "hv-b")],
    vms=[VM("v1", "web-01", "p-shop", "hv-a", "ACTIVE"), VM("v2", "db-01", "p-shop", "hv-b", "ACTIVE"),
         VM("v3", "mon-01", "p-ops", "hv-b", "ACTIVE")],
    interfaces=[Interface(f"i{n}", f"52:54:00:00:00:0{n}", (f"10.0.0.{n}",), f"v{n}", device=f"tap{n}")
                for n in (1, 2, 3)],
)  # fmt: skip
GROUP = "/api/v1/groups/default/config"
PREVIEW = "/api/v1/groups/default/config/preview"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[SimpleNamespace]:
    settings = ServerSettings.model_validate({
        "inventory": {"enabled": False},
        "controller": {"db_path": str(tmp_path / "ctl.sqlite")},
        "auth": {"db_path": str(tmp_path / "access.sqlite"), "audit_log": str(tmp_path / "audit.jsonl")},
    })  # fmt: skip
    app = create_app(settings, None)
    with TestClient(app) as client:
        app.state.controller.inventory = lambda: SNAP
        for host in ("hv-a", "hv-b"):
            body = {"name": f"agent-{host}", "hostname": host, "machine_id": f"m-{host}"}
            assert client.post("/api/v1/agents/register", json=body).status_code == 200
        yield SimpleNamespace(app=app, client=client, admin=grant(app), viewer=grant(app, "viewer"),
                              operator=grant(app, "operator"),
                              shop=grant(app, "operator", ["shop"], name="shop-op"))  # fmt: skip


def changes(diff: str) -> set[str]:
    """The diff's removed and added lines, without indentation: ``{'-"a": 1', '+"a": 2'}``."""
    return {line[0] + line[1:].strip() for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("---", "+++"))}  # fmt: skip


def audit_actions(env: SimpleNamespace) -> list[str]:
    return [r["action"] for r in env.app.state.audit.read()]


def test_the_diff_helpers() -> None:
    assert unified({"a": 1}, {"a": 1}, "x") == ""
    text = unified({"limits": {"max_pps": 5}}, {"limits": {"max_pps": 9}}, "group g")
    assert changes(text) == {'-"max_pps": 5', '+"max_pps": 9'} and "group g (proposed)" in text
    assert unified(None, {"a": 1}, "p").count("\n+") >= 3  # a new document: every line added
    assert changed_leaves({"limits": {"max_pps": 5}, "x": 1}, {"limits": {"max_pps": 5}, "y": 2}) == {
        "x": "restart", "y": "restart"}  # fmt: skip


def test_previews_need_a_user_and_config_write(env: SimpleNamespace) -> None:
    c = env.client
    body = {"overlay": {"limits": {"max_pps": 5}}}
    assert c.post(PREVIEW, json=body).status_code == 401
    assert c.post("/api/v1/policies/p/preview", json={}).status_code == 401
    for path, payload in ((PREVIEW, body), ("/api/v1/policies/p/preview", {"select": {}})):
        r = c.post(path, json=payload, headers=env.viewer)
        assert r.status_code == 403 and "lacks the" in r.json()["detail"], path
    assert c.post(PREVIEW, json=body, headers=env.operator).status_code == 200
    # a project-bound operator may not change a group's config: nor preview it
    r = c.post(PREVIEW, json=body, headers=env.shop)
    assert r.status_code == 403 and "every project" in r.json()["detail"]


def test_a_group_config_preview_shows_the_diff_and_stores_nothing(env: SimpleNamespace) -> None:
    c = env.client
    assert c.put(GROUP, json={"overlay": {"limits": {"max_pps": 5}}}, headers=env.admin).status_code == 200
    before = c.get("/api/v1/groups", headers=env.admin).json()
    r = c.post(PREVIEW, json={"overlay": {"limits": {"max_pps": 9}, "capture": {"snaplen": 128}}}, headers=env.admin)
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["changed"] and p["version"] == 1 and p["version_after"] == 2
    assert p["current"]["overlay"] == {"limits": {"max_pps": 5}}
    assert {'-"max_pps": 5', '+"max_pps": 9', '+"snaplen": 128'} <= changes(p["diff"])
    assert set(p["changed_keys"]) == {"limits.max_pps", "capture.snaplen"}
    assert set(p["changed_keys"].values()) <= {"hot", "restart"}
    assert p["restart_required"] == sorted(k for k, m in p["changed_keys"].items() if m == "restart")
    assert p["agents"] == ["agent-hv-a", "agent-hv-b"]
    assert c.get("/api/v1/groups", headers=env.admin).json() == before  # nothing stored
    same = c.post(PREVIEW, json={"overlay": {"limits": {"max_pps": 5}}}, headers=env.admin).json()
    assert not same["changed"] and same["diff"] == "" and same["version_after"] == 1
    bad = c.post(PREVIEW, json={"overlay": {"limits": {"nope": 1}}}, headers=env.admin)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "overlay"]
    local = c.post(PREVIEW, json={"overlay": {"control": {"listen": "0.0.0.0"}}}, headers=env.admin)
    assert local.status_code == 422 and "agent's own config only" in local.json()["detail"][0]["msg"]
    assert "group.config.preview" not in audit_actions(env) and audit_actions(env).count("group.config") == 1


def test_a_policy_preview_shows_the_diff_and_the_vms_it_moves(env: SimpleNamespace) -> None:
    c = env.client
    r = c.post("/api/v1/policies/shop-web/preview", json={"select": {"project": "shop", "vm": "web-*"}},
               headers=env.admin)  # fmt: skip
    assert r.status_code == 200, r.text
    p = r.json()
    assert not p["exists"] and not p["delete"] and p["changed"] and p["current"] is None
    assert p["proposed"]["name"] == "shop-web" and '+"name": "shop-web",' in changes(p["diff"])
    effects = {e["agent"]: e for e in p["agents"]}
    assert set(effects) == {"agent-hv-a", "agent-hv-b"}  # both now get an active (narrowed) selection
    assert effects["agent-hv-a"]["added"] == ["web-01"] and effects["agent-hv-a"]["active_after"]
    assert effects["agent-hv-b"]["vms_after"] == 0
    assert c.get("/api/v1/policies", headers=env.admin).json() == []  # nothing stored
    assert c.put("/api/v1/policies/shop-web", json=p["proposed"], headers=env.admin).status_code == 200
    widened = c.post("/api/v1/policies/shop-web/preview", json={"select": {"project": "shop"}},
                     headers=env.admin).json()  # fmt: skip
    assert widened["exists"] and '-"vm": "web-*"' in changes(widened["diff"])
    assert [(e["agent"], e["added"]) for e in widened["agents"]] == [("agent-hv-b", ["db-01"])]
    gone = c.post("/api/v1/policies/shop-web/preview?delete=true", headers=env.admin).json()
    assert gone["delete"] and gone["proposed"] is None and gone["diff"].count("\n-") >= 3
    assert {e["agent"] for e in gone["agents"]} == {"agent-hv-a", "agent-hv-b"}
    assert c.post("/api/v1/policies/nope/preview?delete=true", headers=env.admin).status_code == 404
    assert c.post("/api/v1/policies/shop-web/preview", headers=env.admin).status_code == 422  # no body
    bad = c.post("/api/v1/policies/x/preview", json={"bpf": "not a filter ((("}, headers=env.admin)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "bpf"]
    assert [Policy.model_validate(x).name for x in c.get("/api/v1/policies", headers=env.admin).json()] == ["shop-web"]


def test_a_project_operator_previews_only_what_they_may_put(env: SimpleNamespace) -> None:
    c = env.client
    mine = c.post("/api/v1/policies/shop-web/preview", json={"select": {"project": "shop"}}, headers=env.shop)
    assert mine.status_code == 200, mine.text
    for body, why in (({"select": {}}, "every project"), ({"select": {"project": "ops"}}, "outside your scope")):
        r = c.post("/api/v1/policies/x/preview", json=body, headers=env.shop)
        assert r.status_code == 403 and why in r.json()["detail"]
    assert c.put("/api/v1/policies/global", json={"select": {}}, headers=env.admin).status_code == 200
    r = c.post("/api/v1/policies/global/preview?delete=true", headers=env.shop)
    assert r.status_code == 403 and "every project" in r.json()["detail"]
    assert not any(a.endswith("preview") for a in audit_actions(env))


def test_the_previews_are_in_the_openapi_document(env: SimpleNamespace) -> None:
    doc: dict[str, Any] = env.client.get("/openapi.json").json()
    for path, model in (("/api/v1/groups/{name}/config/preview", "GroupConfigPreview"),
                        ("/api/v1/policies/{name}/preview", "PolicyPreview")):
        ok = doc["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}
        assert {"401", "403", "422"} <= set(doc["paths"][path]["post"]["responses"])
