"""ScopedStore: the project scope holds inside every read, however the SQL is shaped.

The two-tenant store (conftest): rows of alpha (A), of beta (B), A -> B and external ones. A store
scoped to A must answer plain counts, subqueries, CTEs, UNIONs, IN-subqueries and joins over
``flow_log``, the edge tables and the endpoint tables from A-touching rows only; an empty project set
sees nothing. Expected values come from the ingested tables, by address.
"""

from __future__ import annotations

from typing import Any

import pytest
from tenantdata import A_IPS, B_IPS, EXTERNAL, IP, TenantData, touches

from cloudtap.inventory.names_store import InventoryNames
from cloudtap.inventory.store import InventoryStore
from cloudtap.server.access.scope import Scope, ScopedStore, project_ids, scoped, table_filters_setting
from cloudtap.server.store.ddl import ip_text_sql


def _a(client: str, server: str) -> bool:
    return touches(A_IPS, client, server)


@pytest.fixture(scope="module")
def names(tenant_store: Any) -> InventoryNames:
    return InventoryNames(InventoryStore(tenant_store))


@pytest.fixture(scope="module")
def alpha(tenant_store: Any, names: InventoryNames) -> ScopedStore:
    ids = project_ids(["alpha"], names)
    assert len(ids) == 1
    return ScopedStore(tenant_store, Scope(ids, frozenset({"alpha"})))


@pytest.fixture(scope="module")
def nowhere(tenant_store: Any) -> ScopedStore:
    """A user bound to projects that resolve to no id (a deleted project): sees nothing."""
    return ScopedStore(tenant_store, Scope(frozenset(), frozenset({"gone"})))


def _one(store: Any, sql: str) -> Any:
    return store.query_arrow(sql).to_pylist()[0]


def _ips(store: Any, sql: str) -> set[str]:
    return {r["ip"] for r in store.query_arrow(sql).to_pylist()}


def test_plain_reads_see_only_the_scope(
    alpha: ScopedStore, tenant_store: Any, tenant_data: TenantData
) -> None:
    db = tenant_store.database
    flows = tenant_data.flow_rows(_a)
    assert _one(alpha, f"SELECT count() AS n FROM {db}.flow_log")["n"] == len(flows)
    assert _one(tenant_store, f"SELECT count() AS n FROM {db}.flow_log")["n"] == tenant_data.flows.num_rows
    want = tenant_data.edge_bytes(_a)
    assert 0 < want < tenant_data.edge_bytes()
    for table in ("edge_1s", "edge_1m", "edge_1h"):
        got = _one(alpha, f"SELECT sum(bytes_c2s + bytes_s2c) AS b FROM {db}.{table}")["b"]
        assert got == want, table


def test_subqueries_ctes_and_unions(alpha: ScopedStore, tenant_store: Any, tenant_data: TenantData) -> None:
    db = tenant_store.database
    pg = [r for r in tenant_data.flow_rows(_a) if r["server_port"] == 5432]
    sub = f"SELECT count() AS n FROM (SELECT * FROM (SELECT server_port FROM {db}.flow_log) WHERE server_port = 5432)"
    assert _one(alpha, sub)["n"] == len(pg)
    cte = (f"WITH per_pair AS (SELECT client_ip, server_ip, sum(bytes_c2s + bytes_s2c) AS b FROM {db}.edge_1m "
           "GROUP BY client_ip, server_ip), total AS (SELECT sum(b) AS t FROM per_pair) "
           "SELECT (SELECT t FROM total) AS t, (SELECT count() FROM per_pair) AS pairs")  # fmt: skip
    pairs = {(r["client_ip"], r["server_ip"]) for r in tenant_data.edge_rows(_a)}
    assert _one(alpha, cte) == {"t": tenant_data.edge_bytes(_a), "pairs": len(pairs)}
    union = (f"SELECT 'flows' AS t, count() AS n FROM {db}.flow_log UNION ALL "
             f"SELECT 'edges', count() FROM (SELECT DISTINCT client_ip, server_ip FROM {db}.edge_1h) UNION ALL "
             f"SELECT 'endpoints', uniqExact(ip) FROM {db}.endpoint_1m")  # fmt: skip
    got = {r["t"]: r["n"] for r in alpha.query_arrow(union).to_pylist()}
    assert got == {"flows": len(tenant_data.flow_rows(_a)), "edges": len(pairs), "endpoints": len(A_IPS)}


def test_in_subqueries_and_joins_never_reach_other_rows(alpha: ScopedStore, tenant_store: Any) -> None:
    db = tenant_store.database
    text = ip_text_sql("server_ip")
    # b-cache is only ever a server of b-web: invisible on both sides of the IN
    sql = (f"SELECT count() AS n FROM {db}.flow_log WHERE server_ip IN "
           f"(SELECT server_ip FROM {db}.edge_1s WHERE server_port = 6379)")  # fmt: skip
    assert _one(alpha, sql)["n"] == 0
    assert _one(tenant_store, sql)["n"] > 0
    joined = (f"SELECT DISTINCT {ip_text_sql('e.server_ip')} AS ip FROM {db}.flow_log AS f "
              f"INNER JOIN {db}.edge_1s AS e ON f.client_ip = e.client_ip")  # fmt: skip
    seen = _ips(alpha, joined)
    assert IP["a-db"] in seen and not seen & {IP["b-db"], IP["b-cache"]}
    assert {IP["b-db"], IP["b-cache"]} <= _ips(tenant_store, joined)
    servers = _ips(alpha, f"SELECT DISTINCT {text} AS ip FROM {db}.edge_1s")
    assert servers == {IP["a-db"], IP["a-app"], IP["a-web"], IP["b-web"]}  # b-web: a-app's peer
    endpoints = _ips(alpha, f"SELECT DISTINCT {ip_text_sql('ip')} AS ip FROM {db}.endpoint_1s")
    assert endpoints == set(A_IPS) and EXTERNAL not in endpoints and not endpoints & B_IPS


def test_an_empty_project_set_sees_nothing(nowhere: ScopedStore, tenant_store: Any) -> None:
    db = tenant_store.database
    for table in ("flow_log", "edge_1s", "edge_1m", "edge_1h", "endpoint_1s", "endpoint_1m", "endpoint_1h"):
        assert _one(nowhere, f"SELECT count() AS n FROM {db}.{table}")["n"] == 0, table
        assert _one(tenant_store, f"SELECT count() AS n FROM {db}.{table}")["n"] > 0, table
    assert _one(nowhere, f"WITH x AS (SELECT * FROM {db}.flow_log) SELECT count() AS n FROM x")["n"] == 0


def test_unrestricted_scope_is_the_store_and_scoped_stores_never_write(
    alpha: ScopedStore, tenant_store: Any
) -> None:
    assert scoped(tenant_store, Scope(None)) is tenant_store
    assert isinstance(scoped(tenant_store, alpha.scope), ScopedStore)
    with pytest.raises(PermissionError):
        alpha.insert({}, None)
    assert alpha.database == tenant_store.database  # everything else is the wrapped store's


def test_every_read_through_a_scoped_store_is_filtered(alpha: ScopedStore, tenant_store: Any,
                                                       tenant_data: TenantData) -> None:  # fmt: skip
    """``command`` reads too (``SELECT`` through it): the scope must hold there as well, or it must refuse."""
    db = tenant_store.database
    want = len(tenant_data.flow_rows(_a))
    try:
        got = int(alpha.command(f"SELECT count() FROM {db}.flow_log"))
    except (PermissionError, ValueError):
        return
    assert got == want, (
        f"ScopedStore.command ran a SELECT without the project scope: {got} rows, {want} visible"
    )


def test_filters_cover_every_data_table_and_quote_safely() -> None:
    scope = Scope(frozenset({3, 1}), frozenset({"a", "b"}))
    filters = scope.row_filters("db")
    assert set(filters) == {f"db.{t}" for t in ("flow_log", "edge_1s", "edge_1m", "edge_1h", "endpoint_1s",
                                                 "endpoint_1m", "endpoint_1h", "request_log", "request_1s",
                                                 "request_1m", "request_1h")}  # fmt: skip
    assert filters["db.flow_log"] == "client_project_id IN (1, 3) OR server_project_id IN (1, 3)"
    assert filters["db.endpoint_1h"] == "project_id IN (1, 3)"
    assert set(scope.row_filters("db", cluster=True)) >= {"db.flow_log_local", "db.edge_1s_local"}
    assert all(c == "0" for c in Scope(frozenset()).row_filters("db").values())
    assert Scope(None).row_filters("db") == {}
    assert table_filters_setting({"d.t": "x = 'it''s'"}) == "{'d.t': 'x = \\'it\\'\\'s\\''}"
