"""InventoryStore: diffs, validity intervals, ids, persistence in the chDB store, merge of sources."""

from __future__ import annotations

import dataclasses

import pytest
from invdata import HOUR, T0, two_tenants

from cloudtap.inventory.addresses import OPEN
from cloudtap.inventory.model import VM, Host, Snapshot
from cloudtap.inventory.store import InventoryStore


def test_vm_moving_host_closes_one_interval_and_opens_another() -> None:
    inv = InventoryStore()
    first = inv.apply(two_tenants(T0))
    assert first.added["vm"] == 3 and first.total == 16
    assert inv.apply(two_tenants(T0 + HOUR)).total == 0  # same content: nothing changes
    moved = inv.apply(two_tenants(T0 + 2 * HOUR, db_host="hv-02"))
    assert moved.changed == {"vm": 1} and moved.changes == [("changed", "vm", "pay/db")]
    hist = inv.history("vm", "pay/db")
    assert [(r.valid_from, r.valid_to, r.entity.host) for r in hist] == [
        (T0, T0 + 2 * HOUR, "hv-01"),
        (T0 + 2 * HOUR, OPEN, "hv-02"),
    ]
    assert hist[0].id == hist[1].id == inv.id_of("vm", "pay/db")
    assert {v.key: v.host for v in inv.at(T0 + HOUR).vms}["pay/db"] == "hv-01"
    assert {v.key: v.host for v in inv.current().vms}["pay/db"] == "hv-02"
    assert inv.at(T0 - 1).vms == []  # before anything was known


def test_vanished_entities_are_closed_and_ids_stay_stable() -> None:
    inv = InventoryStore()
    inv.apply(two_tenants(T0))
    web_id = inv.id_of("vm", "shop/web")
    snap = two_tenants(T0 + HOUR)
    snap.vms = [v for v in snap.vms if v.key != "shop/web"]
    snap.interfaces = [i for i in snap.interfaces if i.vm != "shop/web"]
    removed = inv.apply(snap)
    assert removed.removed == {"vm": 1, "interface": 1}
    assert "shop/web" not in {v.key for v in inv.current().vms}
    inv.apply(two_tenants(T0 + 2 * HOUR))  # it comes back: same id, a second interval
    assert inv.id_of("vm", "shop/web") == web_id
    assert [(r.valid_from, r.valid_to) for r in inv.history("vm", "shop/web")] == [
        (T0, T0 + HOUR),
        (T0 + 2 * HOUR, OPEN),
    ]


def test_bad_snapshots_are_refused() -> None:
    inv = InventoryStore()
    inv.apply(two_tenants(T0))
    with pytest.raises(ValueError, match="older than the last one"):
        inv.apply(two_tenants(T0 - 1))
    dup = two_tenants(T0 + 1)
    dup.vms.append(dup.vms[0])
    with pytest.raises(ValueError, match="vm 'pay/db' appears twice"):
        inv.apply(dup)


def test_sources_merge_by_priority_and_backdating() -> None:
    inv = InventoryStore(backdate_first_sync=True)
    inv.apply(Snapshot("agents", T0, hosts=[Host("hv-01", "hv-01-agent")], vms=[VM("x", "x", host="hv-01")]))
    inv.apply(Snapshot("static", T0 + HOUR, hosts=[Host("hv-01", "hv-01")]))
    merged = inv.current()
    assert [h.name for h in merged.hosts] == ["hv-01"]  # static outranks agents
    assert [v.key for v in merged.vms] == ["x"]  # the rest of the agents' view stays
    assert inv.history("host", "hv-01")[0].valid_from == 0  # first snapshot of a source: since ever
    assert inv.at(T0 - HOUR).hosts[0].name == "hv-01"


def test_history_persists_in_the_store(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    inv = InventoryStore(store)
    inv.apply(two_tenants(T0))
    inv.apply(two_tenants(T0 + HOUR, db_host="hv-02", db_name="db-renamed"))
    again = InventoryStore(store)  # a restarted server
    assert [(r.valid_from, r.valid_to, r.name) for r in again.history("vm", "pay/db")] == [
        (T0, T0 + HOUR, "db-01"),
        (T0 + HOUR, OPEN, "db-renamed"),
    ]
    assert again.id_of("vm", "pay/db") == inv.id_of("vm", "pay/db")
    assert dataclasses.astuple(again.at(T0)) == dataclasses.astuple(inv.at(T0))
    names = store.query_arrow(
        f"SELECT name, valid_to FROM {store.database}.inventory_names WHERE kind = 'vm' AND id = {{i:UInt32}} "
        "ORDER BY valid_from",
        {"i": inv.id_of("vm", "pay/db")},
    ).to_pylist()
    assert names == [{"name": "db-01", "valid_to": T0 + HOUR}, {"name": "db-renamed", "valid_to": OPEN}]
    rows = store.query_arrow(
        f"SELECT IPv6NumToString(ip) AS ip, segment, host_id, valid_from, valid_to FROM {store.database}.inventory_address "
        "FINAL WHERE vm_id = {v:UInt32} ORDER BY valid_from",
        {"v": inv.id_of("vm", "pay/db")},
    ).to_pylist()
    assert [(r["ip"], r["segment"], r["host_id"]) for r in rows] == [
        ("::ffff:10.0.0.5", 101, inv.id_of("host", "hv-01")),
        ("::ffff:10.0.0.5", 101, inv.id_of("host", "hv-02")),
    ]
    assert rows[0]["valid_to"] == rows[1]["valid_from"] == T0 + HOUR
    assert len(again.addresses()) == len(inv.addresses())
