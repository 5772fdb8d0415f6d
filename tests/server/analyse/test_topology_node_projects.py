"""Topology nodes name their project (vm, ip and subnet levels), for a console that groups VMs by project;
the route answers 401 without credentials and keeps a project-bound caller's nodes to its traffic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from analysedata import AnalyseData, DictNames
from fastapi.testclient import TestClient

from access_helpers import grant
from cloudtap.server.analyse import TopologyRequest, topology
from cloudtap.server.api.app import create_app
from cloudtap.server.settings import ServerSettings

DAY = {"time_from": "2026-11-20T00:00:00Z", "time_to": "2026-11-20T03:00:00Z"}


def test_vm_nodes_carry_their_project(astore: Any, names: DictNames, adata: AnalyseData) -> None:
    t = topology(astore, TopologyRequest(**DAY, level="vm", limit=5000), names)
    by_name = {n.name: n.project for n in t.nodes}
    assert by_name["db-01"] == "shop" and by_name["backup-01"] == "infra"
    assert {n.project for n in t.nodes} <= set(adata.inventory["project"]) | {None}


@pytest.mark.parametrize("level", ["ip", "subnet"])
def test_ip_and_subnet_nodes_carry_their_project(
    astore: Any, names: DictNames, adata: AnalyseData, level: str
) -> None:
    t = topology(astore, TopologyRequest(**DAY, level=level, limit=5000), names)
    assert t.nodes and all(n.project in adata.inventory["project"] for n in t.nodes if n.name != "unknown")
    if level == "ip":
        db = next(n for n in t.nodes if n.id == adata.ip_of("db-01"))
        assert db.project == "shop"


@pytest.mark.parametrize("level", ["project", "host"])
def test_other_levels_have_no_project(astore: Any, names: DictNames, level: str) -> None:
    t = topology(astore, TopologyRequest(**DAY, level=level), names)
    assert t.nodes and all(n.project is None for n in t.nodes)


@pytest.fixture(scope="module")
def app(astore: Any, names: DictNames, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("topology-projects")
    settings = ServerSettings.model_validate(
        {"auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}}
    )
    app = create_app(settings, astore)
    with TestClient(app):
        app.state.names = names  # after start-up: the inventory router's lifespan sets its own resolver
        yield app


def test_route_needs_credentials_and_keeps_to_the_callers_projects(app: Any) -> None:
    client = TestClient(app)
    body = {**DAY, "level": "vm", "limit": 5000}
    assert client.post("/api/v1/analysis/topology", json=body).status_code == 401
    everything = client.post("/api/v1/analysis/topology", json=body, headers=grant(app, "admin"))
    assert everything.status_code == 200, everything.text
    shop = client.post("/api/v1/analysis/topology", json=body, headers=grant(app, "viewer", ["shop"]))
    assert shop.status_code == 200, shop.text
    edges, nodes = shop.json()["edges"], {n["id"]: n for n in shop.json()["nodes"]}
    assert edges and len(edges) < len(everything.json()["edges"])
    # every edge a shop viewer sees has a shop VM on one end
    assert all("shop" in (nodes[e["source"]]["project"], nodes[e["target"]]["project"]) for e in edges)
    assert {n["project"] for n in everything.json()["nodes"]} - {n["project"] for n in nodes.values()}
