"""Project scope over application requests: request_log and its rollups show a project-bound caller only
requests with an end in its projects (the two-tenant store of conftest, plus requests on its conversations)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from tenantdata import A_IPS, AGENT, CONVERSATIONS, NS, ip_of, touches

from access_helpers import grant
from cloudtap.inventory.names_store import InventoryNames
from cloudtap.inventory.store import InventoryStore
from cloudtap.inventory.tagging import Tagger
from cloudtap.l7.records import requests_to_arrow
from cloudtap.schema.address import from_text
from cloudtap.schema.request import L7_HTTP, REQ_OK, REQ_SERVER_ERROR, empty_requests
from cloudtap.server.access.scope import Scope, ScopedStore, project_ids
from cloudtap.server.api.app import create_app
from cloudtap.server.ingest import Ingestor
from cloudtap.server.settings import ServerSettings
from cloudtap.server.store.base import BatchKey
from cloudtap.server.store.ddl import TABLES, ip_text_sql

REQUEST_TABLES = ("request_1s", "request_1m", "request_1h")


def _requests(seed: int = 4) -> pa.Table:
    """20 requests per conversation, inside its span; every fifth a server error."""
    rng = np.random.default_rng(seed)
    parts = []
    for client, server, port, t0, t1, _, _ in CONVERSATIONS:
        r = empty_requests(20)
        r["req_ns"] = np.sort(rng.integers(t0, t1 - 10 * NS, 20))
        r["latency_us"] = rng.integers(100, 50_000, 20)
        r["resp_ns"] = r["req_ns"] + r["latency_us"] * 1000
        r["client_hi"], r["client_lo"] = from_text(ip_of(client))
        r["server_hi"], r["server_lo"] = from_text(ip_of(server))
        r["server_port"], r["client_port"], r["proto"], r["l7_proto"] = port, 40_000, 6, L7_HTTP
        r["status"] = np.where(np.arange(20) % 5 == 0, REQ_SERVER_ERROR, REQ_OK)
        r["resource"] = b"/x"
        parts.append(r)
    table = requests_to_arrow(np.concatenate(parts))
    return table.append_column("agent_id", pa.array([AGENT] * table.num_rows, pa.string()))


@pytest.fixture(scope="module")
def requests(tenant_store: Any) -> pa.Table:
    """The requests, ingested (tagged) into the two-tenant store once."""
    table = _requests()
    ingestor = Ingestor(tenant_store, tagger=Tagger(InventoryStore(tenant_store)))
    ingestor.ingest_tables({"requests": table}, BatchKey("tenant-requests", 1))
    assert ingestor.stats.tag_errors == 0
    return table


@pytest.fixture(scope="module")
def alpha(tenant_store: Any) -> ScopedStore:
    ids = project_ids(["alpha"], InventoryNames(InventoryStore(tenant_store)))
    return ScopedStore(tenant_store, Scope(ids, frozenset({"alpha"})))


def test_scoped_reads_of_requests_see_only_the_project(
    alpha: ScopedStore, tenant_store: Any, requests: pa.Table
) -> None:
    db = tenant_store.database
    rows = requests.to_pylist()
    mine = [r for r in rows if touches(A_IPS, r["client_ip"], r["server_ip"])]
    assert 0 < len(mine) < len(rows)
    got = alpha.query_arrow(f"SELECT {ip_text_sql('client_ip')} AS c, {ip_text_sql('server_ip')} AS s "
                            f"FROM {db}.request_log").to_pylist()  # fmt: skip
    assert sorted((r["c"], r["s"]) for r in got) == sorted((r["client_ip"], r["server_ip"]) for r in mine)
    errors = sum(r["status"] == "server_error" for r in mine)
    for table in REQUEST_TABLES:
        sums = alpha.query_arrow(f"SELECT sum(requests) AS n, sum(server_errors) AS e FROM {db}.{table}")
        assert sums.to_pylist()[0] == {"n": len(mine), "e": errors}, table
        everything = tenant_store.query_arrow(f"SELECT sum(requests) AS n FROM {db}.{table}")["n"][0].as_py()
        assert everything == len(rows), table
    # a subquery over a rollup cannot widen it either
    servers = alpha.query_arrow(
        f"SELECT DISTINCT {ip_text_sql('server_ip')} AS s FROM {db}.request_1m "
        f"WHERE server_ip IN (SELECT server_ip FROM {db}.request_log)"
    )["s"].to_pylist()
    assert set(servers) == {r["server_ip"] for r in mine}


def test_a_project_that_resolves_to_nothing_sees_no_requests(tenant_store: Any, requests: pa.Table) -> None:
    nowhere = ScopedStore(tenant_store, Scope(frozenset(), frozenset({"gone"})))
    db = tenant_store.database
    for table in ("request_log", *REQUEST_TABLES):
        assert nowhere.query_arrow(f"SELECT count() AS n FROM {db}.{table}")["n"][0].as_py() == 0


def test_every_data_table_of_the_store_is_scoped() -> None:
    data = {name for name, spec in TABLES.items() if spec.tier != "meta"}
    assert set(Scope(frozenset({1})).row_filters("db")) == {f"db.{t}" for t in data}
    assert set(Scope(frozenset({1})).row_filters("db", cluster=True)) >= {f"db.{t}_local" for t in data}


def test_the_query_api_scopes_requests(
    tenant_store: Any, tenant_inventory: Any, requests: pa.Table, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """POST /api/v1/query on the request tables: alpha's viewer counts alpha-touching requests only."""
    tmp = tmp_path_factory.mktemp("scope-requests-app")
    settings = ServerSettings.model_validate(
        {"storage": {"database": tenant_store.database},
         "inventory": {"static_file": str(tenant_inventory), "learn_from_agents": False},
         "controller": {"db_path": str(tmp / "ctl.sqlite")},
         "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}}
    )  # fmt: skip
    app = create_app(settings, tenant_store)
    with TestClient(app) as client:
        viewer, admin = grant(app, "viewer", ["alpha"], name="alpha-viewer"), grant(app, "admin", name="root")
        rows = requests.to_pylist()
        mine = [r for r in rows if touches(A_IPS, r["client_ip"], r["server_ip"])]
        for table in ("requests", "request_log"):
            body = {
                "table": table,
                "time_from": "all",
                "metrics": ["requests", "errors"],
                "group_by": ["server_ip"],
            }
            assert client.post("/api/v1/query", json=body).status_code == 401
            got = client.post("/api/v1/query", json=body, headers=viewer)
            assert got.status_code == 200, got.text
            per_server = {r[0]: r[1] for r in got.json()["rows"]}
            want: dict[str, int] = {}
            for r in mine:
                want[r["server_ip"]] = want.get(r["server_ip"], 0) + 1
            assert per_server == want, table
            everything = client.post("/api/v1/query", json=body, headers=admin).json()["rows"]
            assert sum(r[1] for r in everything) == len(rows)
