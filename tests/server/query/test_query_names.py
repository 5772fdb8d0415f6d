"""Inventory names in queries: filters by name/glob at the window's time, name columns, errors, the API.

The store holds the query dataset tagged at insert by a small inventory (querydata.VMS) in which
payments' ``db-01`` (10.1.0.1) is renamed ``ledger-01`` one hour into the data. Expected values are
computed from the untagged dataset by IP address.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from querydata import NS, RENAMED_AT, T0, VMS, Dataset, make_dataset, open_named_store

from cloudtap.inventory.names import NoNames
from cloudtap.inventory.names_store import InventoryNames
from cloudtap.server.query.engine import QueryEngine
from cloudtap.server.query.errors import QueryError
from cloudtap.server.query.model import Filter, Query
from cloudtap.server.query.names import plan_names

FIRST_HOUR = {"time_from": T0, "time_to": RENAMED_AT, "interval": "1s"}
SECOND_HOUR = {"time_from": RENAMED_AT, "time_to": RENAMED_AT + 3600 * NS, "interval": "1s"}
IP = {name: ip for name, (_, _, ip) in VMS.items()}
PAY_IPS = {ip for name, (project, _, ip) in VMS.items() if project == "pay"}


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_dataset(flows=600, deltas=4000)


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory, data: Dataset) -> Iterator[tuple[Any, Any]]:
    store, inventory = open_named_store(str(tmp_path_factory.getbasetemp() / "chdb"), data, "query_names")
    try:
        yield store, inventory
    finally:
        store.close()


@pytest.fixture(scope="module")
def engine(named: tuple[Any, Any]) -> QueryEngine:
    store, inventory = named
    return QueryEngine(store, names=InventoryNames(inventory))


def _edge_bytes(data: Dataset, t0: int, t1: int, keep: Any) -> int:
    e = data.edges_1s.to_pydict()
    return sum(
        e["bytes_c2s"][i] + e["bytes_s2c"][i]
        for i in range(len(e["time_ns"]))
        if t0 <= e["time_ns"][i] < t1 and keep(e["client_ip"][i], e["server_ip"][i])
    )


def _total(engine: QueryEngine, **query: Any) -> int:
    result = engine.run(Query(table="edges", metrics=["bytes"], **query))
    return int(result.table["bytes"][0].as_py() or 0)


def test_filter_by_vm_name_at_the_window_time(engine: QueryEngine, data: Dataset) -> None:
    db = IP["db-01"]
    first = _edge_bytes(data, T0, RENAMED_AT, lambda c, s: s == db)
    second = _edge_bytes(data, RENAMED_AT, RENAMED_AT + 3600 * NS, lambda c, s: s == db)
    assert first > 0 and second > 0
    assert _total(engine, **FIRST_HOUR, filters=[{"dim": "server_vm", "value": "db-01"}]) == first
    # after the rename the same VM is ledger-01; db-01 names nothing in that window
    assert _total(engine, **SECOND_HOUR, filters=[{"dim": "server_vm", "value": "ledger-01"}]) == second
    with pytest.raises(QueryError, match="no vm named 'db-01'"):
        engine.run(Query(**SECOND_HOUR, metrics=["bytes"], filters=[{"dim": "server_vm", "value": "db-01"}]))
    # a window spanning the rename: either name selects the VM's whole traffic
    both = {"time_from": T0, "time_to": RENAMED_AT + 3600 * NS, "interval": "1s"}
    assert _total(engine, **both, filters=[{"dim": "server_vm", "value": "ledger-01"}]) == first + second


def test_unsided_project_means_either_side_and_ne_means_neither(engine: QueryEngine, data: Dataset) -> None:
    either = _edge_bytes(data, T0, RENAMED_AT, lambda c, s: c in PAY_IPS or s in PAY_IPS)
    neither = _edge_bytes(data, T0, RENAMED_AT, lambda c, s: c not in PAY_IPS and s not in PAY_IPS)
    assert _total(engine, **FIRST_HOUR, filters=[{"dim": "project", "value": "payments"}]) == either
    assert _total(engine, **FIRST_HOUR, filters=[{"dim": "project", "op": "ne", "value": "payments"}]) == neither
    assert either > 0 and neither > 0


def test_globs_lists_and_prefix(engine: QueryEngine, data: Dataset) -> None:
    dbs = {IP["db-01"], IP["db-02"]}
    want = _edge_bytes(data, T0, RENAMED_AT, lambda c, s: s in dbs)
    assert _total(engine, **FIRST_HOUR, filters=[{"dim": "server_vm", "value": "db-*"}]) == want
    assert _total(engine, **FIRST_HOUR, filters=[{"dim": "server_vm", "op": "in", "value": ["db-01", "db-02"]}]) == want
    assert _total(engine, **FIRST_HOUR, filters=[Filter.parse("server_vm~db")]) == want
    hv1 = {ip for _, host, ip in VMS.values() if host == "hv-01"}
    assert _total(engine, **FIRST_HOUR, filters=[Filter.parse("client_host=hv-01")]) == _edge_bytes(
        data, T0, RENAMED_AT, lambda c, s: c in hv1
    )


def test_flows_filter_by_name(engine: QueryEngine, data: Dataset) -> None:
    f = data.flows.to_pydict()
    web = IP["web-01"]
    want = sum(1 for i in range(len(f["first_ns"])) if web in (f["client_ip"][i], f["server_ip"][i]))
    result = engine.run(Query(table="flows", time_from="all", metrics=["records"], filters=[Filter.parse("vm=web-01")]))
    assert result.table["records"].to_pylist() == [want] and want > 0


def test_group_by_logical_names(engine: QueryEngine, data: Dataset) -> None:
    result = engine.run(Query(**FIRST_HOUR, group_by=["client_vm", "server_vm"], metrics=["bytes"], limit=1000))
    assert result.table.column_names == ["client_vm", "server_vm", "bytes"]
    by_ip = {ip: name for name, ip in IP.items()}
    want: dict[tuple[str | None, str | None], int] = {}
    e = data.edges_1s.to_pydict()
    for i in range(len(e["time_ns"])):
        if T0 <= e["time_ns"][i] < RENAMED_AT:
            key = (by_ip.get(e["client_ip"][i]), by_ip.get(e["server_ip"][i]))
            want[key] = want.get(key, 0) + e["bytes_c2s"][i] + e["bytes_s2c"][i]
    got = {(r["client_vm"], r["server_vm"]): r["bytes"] for r in result.table.to_pylist()}
    assert got == want
    assert ("app-01", "db-01") in got  # names as they were in the window (before the rename)
    later = engine.run(Query(**SECOND_HOUR, group_by=["server_vm"], metrics=["bytes"]))
    assert "ledger-01" in later.table["server_vm"].to_pylist() and "db-01" not in later.table["server_vm"].to_pylist()
    info = {c["name"]: c for c in result.to_json()["column_info"]}
    assert info["server_vm"]["role"] == "dimension" and info["server_vm"]["type"] == "string"


def test_group_by_id_adds_the_name_column(engine: QueryEngine) -> None:
    result = engine.run(Query(**FIRST_HOUR, group_by=["server_project_id"], metrics=["bytes"]))
    assert result.table.column_names == ["server_project_id", "server_project", "bytes"]
    names = dict(zip(result.table["server_project_id"].to_pylist(), result.table["server_project"].to_pylist(),
                     strict=True))  # fmt: skip
    assert names[0] is None and {names[i] for i in names if i} == {"payments", "shop"}
    assert result.to_json()["columns"] == ["server_project_id", "server_project", "bytes"]
    # without a resolver ids stay ids; logical names show #id
    plain = QueryEngine(engine.store).run(Query(**FIRST_HOUR, group_by=["server_project_id", "server_host"],
                                                metrics=["bytes"]))  # fmt: skip
    assert plain.table.column_names == ["server_project_id", "server_host", "bytes"]
    assert {h for h in plain.table["server_host"].to_pylist() if h} <= {"#1", "#2"}


def test_raw_listing_with_name_columns(engine: QueryEngine) -> None:
    result = engine.run(Query(table="flows", time_from="all", columns=["server_ip", "server_vm", "client_project"],
                              filters=[Filter.parse("server_vm=web-01")], limit=5))  # fmt: skip
    rows = result.table.to_pylist()
    assert len(rows) == 5 and all(r["server_ip"] == IP["web-01"] and r["server_vm"] == "web-01" for r in rows)


def test_unknown_names_and_bad_uses_are_clear_errors(engine: QueryEngine) -> None:
    with pytest.raises(QueryError, match="no project named 'nope'") as exc:
        engine.run(Query(**FIRST_HOUR, metrics=["bytes"], filters=[Filter.parse("project=nope")]))
    assert exc.value.field == "filters"
    with pytest.raises(QueryError, match="names take"):
        plan_names(Query(**FIRST_HOUR, metrics=["bytes"], filters=[Filter.parse("vm>db")]))
    with pytest.raises(QueryError, match="order by its _id column"):
        plan_names(Query(**FIRST_HOUR, group_by=["server_vm"], metrics=["bytes"], order_by=["server_vm"]))
    with pytest.raises(QueryError, match="needs the inventory"):
        QueryEngine(engine.store).run(Query(**FIRST_HOUR, metrics=["bytes"], filters=[Filter.parse("vm=db-01")]))
    with pytest.raises(QueryError, match="no vm named"):
        QueryEngine(engine.store, names=NoNames()).run(
            Query(**FIRST_HOUR, metrics=["bytes"], filters=[Filter.parse("vm=db-01")])
        )


def test_id_filters_on_either_side(engine: QueryEngine, named: tuple[Any, Any], data: Dataset) -> None:
    _, inventory = named
    web = inventory.id_of("vm", "shop/web-01")
    want = _edge_bytes(data, T0, RENAMED_AT, lambda c, s: IP["web-01"] in (c, s))
    assert _total(engine, **FIRST_HOUR, filters=[{"dim": "vm_id", "value": web}]) == want
    compiled = engine.compile(Query(**FIRST_HOUR, metrics=["bytes"], filters=[{"dim": "vm_id", "value": web}]))
    assert "(`client_vm_id` IN ({p2:Int64}) OR `server_vm_id` IN ({p3:Int64}))" in compiled.sql
    assert compiled.parameters["p2"] == compiled.parameters["p3"] == web  # bound, not pasted


# --- the API ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(named: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from access_helpers import admin_client
    from cloudtap.server.api.app import create_app
    from cloudtap.server.settings import ServerSettings

    store, inventory = named
    tmp = tmp_path_factory.mktemp("query-names-api")
    settings = ServerSettings.model_validate(
        {"inventory": {"enabled": False},
         "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}}
    )  # fmt: skip
    app = create_app(settings, store)
    app.state.names = InventoryNames(inventory)
    with admin_client(app) as c:
        yield c


def test_api_top_by_name_parameters(client: TestClient, data: Dataset) -> None:
    window = {"from": "2024-03-01T00:00:00Z", "to": "2024-03-01T01:00:00Z", "interval": "1s"}
    r = client.get("/api/v1/query/top", params={**window, "vm": "db-01", "group": "client_vm,server_vm", "limit": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["client_vm", "server_vm", "bytes"]
    # vm means either side: db-01 is a server here; its peers include unnamed (null) clients
    assert {row[1] for row in body["rows"]} == {"db-01"}
    assert sum(row[2] for row in body["rows"]) == _edge_bytes(data, T0, RENAMED_AT, lambda c, s: IP["db-01"] in (c, s))
    r = client.get("/api/v1/query/series", params={**window, "project": "payments", "host": "hv-0*", "step": "10m"})
    assert r.status_code == 200, r.text
    assert len(r.json()["rows"]) == 6 and r.json()["rows"][0][1] > 0
    r = client.get("/api/v1/query/flows", params={"since": "all", "subnet": "backend", "limit": 3})
    assert r.status_code == 200 and len(r.json()["rows"]) == 3


def test_api_unknown_name_is_a_422_naming_it(client: TestClient) -> None:
    r = client.get("/api/v1/query/top", params={"since": "all", "vm": "db-99"})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["query", "filters"] and "db-99" in detail["msg"]
    r = client.post("/api/v1/query", json={"time_from": "all", "metrics": ["bytes"],
                                           "filters": [{"dim": "client_project", "value": "nope*"}]})  # fmt: skip
    assert r.status_code == 422 and "'nope*'" in r.json()["detail"][0]["msg"]
