"""Two tenants on one server: a user of project alpha (A) sees, counts and infers nothing of beta (B).

The store (conftest, tenantdata) holds A's and B's VMs, traffic inside each, A -> B (a-app -> b-web)
and an external address talking to both; B alone goes on for ten minutes after the rest. Users: a
viewer of A, a viewer of B, an operator of A, an admin. Every total, ranking, series, listing,
topology, comparison, drill-down and backtest of A's viewer must equal what the A-touching rows give
(computed from the ingested tables, never from the API); B-only VMs (b-db, b-cache) never appear, and
naming one answers exactly like naming a VM that does not exist. The admin sees everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tenantdata import A_IPS, B_IPS, HOUR, IP, NS, T0, VMS, TenantData, touches

from access_helpers import grant
from cloudtap.server.api.app import create_app
from cloudtap.server.audit import audit_of
from cloudtap.server.settings import ServerSettings

Keep = Callable[[str, str], bool]
Users = dict[str, dict[str, str]]
A_VMS = {name for name, (project, *_) in VMS.items() if project == "alpha"}
B_ONLY_VMS = {"b-db", "b-cache"}  #: B's VMs that never talk to A
T_END = T0 + 3 * HOUR
KEEP: dict[str, Keep] = {
    "a_viewer": lambda c, s: touches(A_IPS, c, s),
    "b_viewer": lambda c, s: touches(B_IPS, c, s),
    "admin": lambda c, s: True,
}


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


WINDOW = {"time_from": iso(T0), "time_to": iso(T_END)}
Q = {"from": iso(T0), "to": iso(T_END)}


@pytest.fixture(scope="module")
def app(tenant_store: Any, tenant_inventory: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("tenants-app")
    settings = ServerSettings.model_validate(
        {"storage": {"database": tenant_store.database},
         "inventory": {"static_file": str(tenant_inventory), "learn_from_agents": False},
         "controller": {"db_path": str(tmp / "ctl.sqlite")},
         "auth": {"db_path": str(tmp / "access.sqlite"), "audit_log": str(tmp / "audit.jsonl")}}
    )  # fmt: skip
    application = create_app(settings, tenant_store)
    with TestClient(application):  # lifespans: the inventory service and the controller
        yield application


@pytest.fixture(scope="module")
def client(app: Any) -> TestClient:
    return TestClient(app)


@pytest.fixture(scope="module")
def users(app: Any) -> Users:
    return {
        "a_viewer": grant(app, "viewer", ["alpha"], name="alpha-viewer"),
        "b_viewer": grant(app, "viewer", ["beta"], name="beta-viewer"),
        "a_operator": grant(app, "operator", ["alpha"], name="alpha-operator"),
        "admin": grant(app, "admin", name="root"),
    }


def _ok(r: Any) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


# --- query ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["a_viewer", "b_viewer", "admin"])
def test_data_extent_is_the_scope_s_minutes(client: TestClient, users: Users, tenant_data: TenantData, who: str) -> None:
    """The console's "all stored data" range: first and last minute of the rows the caller may see."""
    times = [r["time_ns"] for r in tenant_data.edge_rows(KEEP[who])]
    got = _ok(client.get("/api/v1/query/extent", headers=users[who]))
    minute = 60 * NS
    assert got == {"first": iso(min(times) // minute * minute), "last": iso(max(times) // minute * minute + minute)}
    assert client.get("/api/v1/query/extent").status_code == 401


@pytest.mark.parametrize("who", ["a_viewer", "b_viewer", "admin"])
@pytest.mark.parametrize("interval", ["1s", "1m", "1h"])
def test_edge_totals_are_the_scope_s_rows(client: TestClient, users: Users, tenant_data: TenantData, who: str,
                                          interval: str) -> None:  # fmt: skip
    body = {**WINDOW, "table": "edges", "interval": interval, "metrics": ["bytes", "packets"]}
    got = _ok(client.post("/api/v1/query", json=body, headers=users[who]))
    rows = tenant_data.edge_rows(KEEP[who])
    want_bytes = sum(r["bytes_c2s"] + r["bytes_s2c"] for r in rows)
    want_packets = sum(r["packets_c2s"] + r["packets_s2c"] for r in rows)
    assert got["rows"] == [[want_bytes, want_packets]]
    if who != "admin":
        assert 0 < want_bytes < tenant_data.edge_bytes()


@pytest.mark.parametrize("who", ["a_viewer", "b_viewer", "admin"])
def test_flow_counts_and_listings_are_the_scope_s_rows(client: TestClient, users: Users, tenant_data: TenantData,
                                                       who: str) -> None:  # fmt: skip
    flows = tenant_data.flow_rows(KEEP[who])
    body = {**WINDOW, "table": "flows", "metrics": ["records", "bytes", "uniq(server_ip)"]}
    got = _ok(client.post("/api/v1/query", json=body, headers=users[who]))
    assert got["rows"] == [[len(flows), sum(r["bytes_c2s"] + r["bytes_s2c"] for r in flows),
                            len({r["server_ip"] for r in flows})]]  # fmt: skip
    listed = _ok(client.get("/api/v1/query/flows", params={**Q, "limit": 10_000, "columns": "client_ip,server_ip"},
                            headers=users[who]))  # fmt: skip
    assert sorted(map(tuple, listed["rows"])) == sorted((r["client_ip"], r["server_ip"]) for r in flows)


def test_top_talkers_and_series_of_a_s_viewer(
    client: TestClient, users: Users, tenant_data: TenantData
) -> None:
    keep = KEEP["a_viewer"]
    want: dict[tuple[str, str], int] = {}
    buckets: dict[int, int] = {}
    for r in tenant_data.edge_rows(keep):
        pair = (r["client_ip"], r["server_ip"])
        want[pair] = want.get(pair, 0) + r["bytes_c2s"] + r["bytes_s2c"]
        bucket = r["time_ns"] // (600 * NS) * 600 * NS
        buckets[bucket] = buckets.get(bucket, 0) + r["bytes_c2s"] + r["bytes_s2c"]
    top = _ok(client.get("/api/v1/query/top", params={**Q, "group": "client_ip,server_ip", "limit": 100,
                                                      "interval": "1s"}, headers=users["a_viewer"]))  # fmt: skip
    assert {(c, s): b for c, s, b in top["rows"]} == want
    assert (IP["a-app"], IP["b-web"]) in want and (IP["b-web"], IP["b-db"]) not in want
    series = _ok(client.get("/api/v1/query/series", params={**Q, "metric": "bytes", "step": "10m", "interval": "1m"},
                            headers=users["a_viewer"]))  # fmt: skip
    got = {
        datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * NS: v for t, v in series["rows"] if v
    }
    assert got == {float(k): v for k, v in buckets.items()}
    assert max(got) < T0 + 2 * HOUR  # B's tail (02:00-02:10) leaves no bucket
    grouped = _ok(client.get("/api/v1/query/top", params={**Q, "group": "server_vm", "limit": 100},
                             headers=users["a_viewer"]))  # fmt: skip
    assert {r[0] for r in grouped["rows"]} == {"a-db", "a-app", "a-web", "b-web"}


@pytest.mark.parametrize("who", ["a_viewer", "admin"])
def test_endpoints_are_the_scope_s_addresses(client: TestClient, users: Users, tenant_data: TenantData,
                                             who: str) -> None:  # fmt: skip
    want: dict[str, int] = {}
    for r in tenant_data.edge_rows():
        for ip in (r["client_ip"], r["server_ip"]):
            want[ip] = want.get(ip, 0) + r["bytes_c2s"] + r["bytes_s2c"]
    if who == "a_viewer":
        want = {ip: b for ip, b in want.items() if ip in A_IPS}
    body = {
        **WINDOW,
        "table": "endpoints",
        "interval": "1m",
        "group_by": ["ip"],
        "metrics": ["bytes"],
        "limit": 100,
    }
    got = _ok(client.post("/api/v1/query", json=body, headers=users[who]))
    assert {ip: b for ip, b in got["rows"]} == want


# --- analysis ------------------------------------------------------------------------------------------


def test_topology_has_no_b_only_node_or_edge(
    client: TestClient, users: Users, tenant_data: TenantData
) -> None:
    keep = KEEP["a_viewer"]
    vm = _ok(client.post("/api/v1/analysis/topology", json={**WINDOW, "level": "vm", "limit": 1000},
                         headers=users["a_viewer"]))  # fmt: skip
    names = {n["name"] for n in vm["nodes"]}
    assert A_VMS <= names and not names & B_ONLY_VMS
    assert all({e["source_name"], e["target_name"]} & A_VMS for e in vm["edges"])
    assert sum(e["bytes"] for e in vm["edges"]) == tenant_data.edge_bytes(keep)
    assert vm["edges_total"] == len({(r["client_ip"], r["server_ip"]) for r in tenant_data.edge_rows(keep)})
    everything = _ok(client.post("/api/v1/analysis/topology", json={**WINDOW, "level": "vm", "limit": 1000},
                                 headers=users["admin"]))  # fmt: skip
    assert B_ONLY_VMS <= {n["name"] for n in everything["nodes"]}
    assert sum(e["bytes"] for e in everything["edges"]) == tenant_data.edge_bytes()
    projects = _ok(client.post("/api/v1/analysis/topology", json={**WINDOW, "level": "project", "limit": 1000},
                               headers=users["a_viewer"]))  # fmt: skip
    pairs = {(e["source_name"], e["target_name"]): e["bytes"] for e in projects["edges"]}
    assert set(pairs) == {("alpha", "alpha"), ("alpha", "beta"), ("unknown", "alpha")}
    assert pairs[("alpha", "beta")] == tenant_data.edge_bytes(
        lambda c, s: (c, s) == (IP["a-app"], IP["b-web"])
    )
    assert sum(pairs.values()) == tenant_data.edge_bytes(keep)


def test_compare_sees_no_b_only_edge_nor_volume(
    client: TestClient, users: Users, tenant_data: TenantData
) -> None:
    keep = KEEP["a_viewer"]
    body = {"time_from": iso(T0 + HOUR), "time_to": iso(T0 + 2 * HOUR), "baseline": "before", "level": "vm",
            "by_port": False, "limit": 1000, "bursts": 0}  # fmt: skip
    got = _ok(client.post("/api/v1/analysis/compare", json=body, headers=users["a_viewer"]))
    listed = got["edges"] + got["new_edges"] + got["vanished_edges"]
    assert listed and all({c["source_name"], c["target_name"]} & A_VMS for c in listed)
    assert (
        not {n for c in listed + got["endpoints"] for n in (c["source_name"], c["target_name"])} & B_ONLY_VMS
    )
    in_window = tenant_data.edge_bytes(keep, T0 + HOUR, T0 + 2 * HOUR)
    assert sum(c["value"] for c in got["edges"]) == in_window
    assert {c["source_name"] for c in got["new_edges"]} == {"a-app"}  # a-app -> b-web is new in hour 1
    admin = _ok(client.post("/api/v1/analysis/compare", json=body, headers=users["admin"]))
    assert sum(c["value"] for c in admin["edges"]) == tenant_data.edge_bytes(t0=T0 + HOUR, t1=T0 + 2 * HOUR)


def test_drill_into_a_shared_peer_shows_only_a_s_share(
    client: TestClient, users: Users, tenant_data: TenantData
) -> None:
    body = {**WINDOW, "target": {"ip": IP["b-web"]}, "limit": 100}
    got = _ok(client.post("/api/v1/analysis/drill", json=body, headers=users["a_viewer"]))
    assert got["total_bytes"] == tenant_data.edge_bytes(lambda c, s: (c, s) == (IP["a-app"], IP["b-web"]))
    assert {p["key"] for p in got["by_peer"]} <= {"a-app", IP["a-app"]}
    admin = _ok(client.post("/api/v1/analysis/drill", json=body, headers=users["admin"]))
    assert admin["total_bytes"] == tenant_data.edge_bytes(lambda c, s: IP["b-web"] in (c, s))
    mine = _ok(client.post("/api/v1/analysis/drill", json={**WINDOW, "target": {"vm": "a-app"}, "limit": 100},
                           headers=users["a_viewer"]))  # fmt: skip
    assert mine["total_bytes"] == tenant_data.edge_bytes(lambda c, s: IP["a-app"] in (c, s))


def test_backtest_totals_and_range_are_a_s(client: TestClient, users: Users, tenant_data: TenantData) -> None:
    sig = {"condition": {"metric": "bytes", "op": "gt", "threshold": 0}, "step": "1m", "max_gap": 10_000}
    got = _ok(client.post("/api/v1/analysis/backtest", json={"signature": sig}, headers=users["a_viewer"]))
    assert sum(o["total"] for o in got["occurrences"]) == tenant_data.edge_bytes(KEEP["a_viewer"])
    last = max(r["time_ns"] for r in tenant_data.edge_rows(KEEP["a_viewer"]))
    scanned_to = datetime.fromisoformat(got["scanned"]["to"].replace("Z", "+00:00")).timestamp() * NS
    assert scanned_to <= last + 60 * NS  # B's later rows do not stretch A's history
    admin = _ok(client.post("/api/v1/analysis/backtest", json={"signature": sig}, headers=users["admin"]))
    assert sum(o["total"] for o in admin["occurrences"]) == tenant_data.edge_bytes()


def test_saved_signatures_are_for_unrestricted_users_only(client: TestClient, users: Users) -> None:
    """Saved signatures are shared by every project (their filters name VMs), so a project-bound user may
    not save, list, read or run them; inline backtests stay open and are scoped."""
    sig = {"description": "a-db load", "filter": {"vm": "a-db"},
           "condition": {"metric": "bytes", "op": "gt", "threshold": 1}}  # fmt: skip
    for who in ("a_viewer", "a_operator", "b_viewer"):
        assert client.put("/api/v1/analysis/signatures/alpha-db", json=sig, headers=users[who]).status_code == 403
    saved = client.put("/api/v1/analysis/signatures/alpha-db", json=sig, headers=users["admin"])
    assert saved.status_code == 200, saved.text
    for who in ("a_viewer", "b_viewer"):
        listed = client.get("/api/v1/analysis/signatures", headers=users[who])
        assert listed.status_code == 403 and "a-db" not in listed.text
        assert client.get("/api/v1/analysis/signatures/alpha-db", headers=users[who]).status_code == 403
        ran = client.post("/api/v1/analysis/signatures/alpha-db/run", json={}, headers=users[who])
        assert ran.status_code == 403
        by_name = client.post("/api/v1/analysis/backtest", json={"name": "alpha-db"}, headers=users[who])
        assert by_name.status_code == 403
    assert "alpha-db" in {s["name"] for s in _ok(client.get("/api/v1/analysis/signatures", headers=users["admin"]))}


# --- names of the other tenant -----------------------------------------------------------------------


def _shape(r: Any, name: str) -> tuple[int, Any]:
    """Status and body with the asked name blanked (what a caller could tell two answers apart by)."""
    return r.status_code, r.text.replace(name, "<name>")


def test_naming_a_b_only_vm_answers_like_an_unknown_vm(client: TestClient, users: Users) -> None:
    a = users["a_viewer"]
    calls: dict[str, Callable[[str], Any]] = {
        "GET /query/top?vm=": lambda n: client.get("/api/v1/query/top", params={**Q, "vm": n}, headers=a),
        "GET /query/flows?vm=": lambda n: client.get("/api/v1/query/flows", params={**Q, "vm": n}, headers=a),
        "POST /query server_vm filter": lambda n: client.post(
            "/api/v1/query", json={**WINDOW, "metrics": ["bytes"], "filters": [{"dim": "server_vm", "value": n}]},
            headers=a),
        "POST /analysis/drill target vm": lambda n: client.post(
            "/api/v1/analysis/drill", json={**WINDOW, "target": {"vm": n}}, headers=a),
        "POST /analysis/topology filter vm": lambda n: client.post(
            "/api/v1/analysis/topology", json={**WINDOW, "filter": {"vm": n}}, headers=a),
        "GET /inventory/vm?name=": lambda n: client.get("/api/v1/inventory/vm", params={"name": n}, headers=a),
    }  # fmt: skip
    leaks = []
    for label, call in calls.items():
        b_db, unknown = call("b-db"), call("zz-none")
        if _shape(b_db, "b-db") != _shape(unknown, "zz-none"):
            leaks.append(f"{label}: b-db -> {b_db.status_code} {b_db.text[:90]} | unknown -> "
                         f"{unknown.status_code} {unknown.text[:90]}")  # fmt: skip
    assert not leaks, "B's VM names are told apart from unknown names:\n" + "\n".join(leaks)
    # ... and the same calls find A's own VM
    assert client.get("/api/v1/query/top", params={**Q, "vm": "a-db"}, headers=a).json()["rows"]


def test_inventory_shows_only_a_s_projects(client: TestClient, users: Users, app: Any) -> None:
    a = users["a_viewer"]

    def names(kind: str, who: dict[str, str] = a, **params: Any) -> set[str]:
        body = _ok(client.get(f"/api/v1/inventory/{kind}", params=params, headers=who))
        return {i.get("name") or i["key"] for i in body["items"]}

    assert names("vm") == A_VMS and names("project") == {"alpha"}
    assert names("host") == {"hv-1", "hv-2"}  # hv-3 runs only B's VMs
    assert names("subnet") == {"alpha-sub"} and names("network") == {"alpha-net"}
    assert names("vm", name="b-*") == set() and names("interface") == {VMS[v][3] for v in A_VMS}
    assert names("vm", users["admin"]) == set(VMS)
    inventory = app.state.inventory
    ids = ",".join(str(inventory.id_of("vm", f"{p}/{n}")) for n, (p, *_) in VMS.items())
    assert (
        set(_ok(client.get("/api/v1/inventory/vm/names", params={"ids": ids}, headers=a)).values()) == A_VMS
    )
    b_db = client.get("/api/v1/inventory/vm/history", params={"key": "beta/b-db"}, headers=a)
    unknown = client.get("/api/v1/inventory/vm/history", params={"key": "beta/zz-none"}, headers=a)
    assert _shape(b_db, "beta/b-db") == _shape(unknown, "beta/zz-none") and b_db.status_code == 404
    assert (
        client.get("/api/v1/inventory/vm/history", params={"key": "alpha/a-db"}, headers=a).status_code == 200
    )
    status = _ok(client.get("/api/v1/inventory/status", headers=a))
    assert status["counts"]["vm"] == 3 and status["counts"]["project"] == 1 and "connectors" not in status


# --- packets -------------------------------------------------------------------------------------------


def test_pcap_of_a_b_vm_is_403_and_audited(client: TestClient, users: Users, app: Any) -> None:
    body = {"from": iso(T0 + HOUR), "to": iso(T0 + HOUR + 60 * NS)}
    audit = audit_of(app)
    before = len(audit.read(action="pcap.retrieve"))
    assert (
        client.post("/api/v1/pcap", json={**body, "vm": "b-db"}, headers=users["a_viewer"]).status_code == 403
    )
    assert len(audit.read(action="pcap.retrieve")) == before  # no pcap:read: refused by the guard
    b_db = client.post("/api/v1/pcap", json={**body, "vm": "b-db"}, headers=users["a_operator"])
    assert b_db.status_code == 403
    line = audit.read(action="pcap.retrieve")[-1]
    assert line["actor"] == "alpha-operator" and line["outcome"] == "refused" and line["vm"] == "b-db"
    assert line["status"] == 403 and line["bytes"] == 0
    unknown = client.post("/api/v1/pcap", json={**body, "vm": "zz-none"}, headers=users["a_operator"])
    assert _shape(b_db, "b-db") == _shape(unknown, "zz-none")
    by_agent = client.post(
        "/api/v1/pcap", json={**body, "agents": [{"agent": "hv-3"}]}, headers=users["a_operator"]
    )
    assert by_agent.status_code == 403
    # their own VM passes the scope check, as B's does for the admin (then no registered agent can be asked)
    for vm, who in (("a-db", "a_operator"), ("b-db", "admin")):
        r = client.post("/api/v1/pcap", json={**body, "vm": vm}, headers=users[who])
        assert r.status_code in (400, 404) and "hv-agent" in r.json()["detail"], r.text


# --- fleet-wide views ----------------------------------------------------------------------------------


def test_fleet_wide_counters_are_not_for_project_users(client: TestClient, users: Users) -> None:
    for path in ("/api/v1/ingest/stats", "/metrics", "/api/v1/audit", "/api/v1/users"):
        assert client.get(path, headers=users["a_viewer"]).status_code == 403, path
        assert client.get(path, headers=users["admin"]).status_code == 200, path
    me = _ok(client.get("/api/v1/auth/me", headers=users["a_viewer"]))
    assert me["permissions"] == {
        "flows:read": ["alpha"],
        "inventory:read": ["alpha"],
        "fleet:read": ["alpha"],
    }


def test_fleet_diagnosis_of_a_b_vm_answers_like_an_unknown_vm(client: TestClient, users: Users) -> None:
    """``GET /api/v1/diagnose/vm/{name}`` (fleet:read): nothing of B's VM, nor how many VMs B has."""
    a = users["a_viewer"]
    b_db = client.get("/api/v1/diagnose/vm/b-db", headers=a)
    unknown = client.get("/api/v1/diagnose/vm/zz-none", headers=a)
    assert _shape(b_db, "b-db") == _shape(unknown, "zz-none"), (b_db.text, unknown.text)
    assert "beta" not in b_db.text and "hv-3" not in b_db.text
    assert f"{len(VMS)} VMs" not in unknown.text  # the fleet-wide VM count
    assert "a-db" in client.get("/api/v1/diagnose/vm/a-db", headers=a).text
