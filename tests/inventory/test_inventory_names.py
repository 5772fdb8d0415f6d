"""InventoryNames: names as they were at a time (renames do not rewrite history), globs, name filters."""

from __future__ import annotations

import pytest
from invdata import HOUR, T0, two_tenants

from cloudtap.inventory.names import NoNames
from cloudtap.inventory.names_store import InventoryNames, NameFilterError, resolve_name_filters
from cloudtap.inventory.store import InventoryStore


@pytest.fixture
def renamed() -> InventoryStore:
    inv = InventoryStore()
    inv.apply(two_tenants(T0))
    inv.apply(two_tenants(T0 + HOUR, db_name="ledger-01"))  # payments' db-01 renamed
    return inv


def test_names_at_a_time_after_a_rename(renamed: InventoryStore) -> None:
    names = InventoryNames(renamed)
    pay_db = renamed.id_of("vm", "pay/db")
    assert names.names("vm", [pay_db], T0 + 1) == {pay_db: "db-01"}
    assert names.names("vm", [pay_db], T0 + 2 * HOUR) == {pay_db: "ledger-01"}
    assert names.names("vm", [pay_db]) == {pay_db: "ledger-01"}
    assert names.names("vm", [pay_db, 999], T0 - 1) == {}  # before it existed; unknown id


def test_ids_by_name_and_glob(renamed: InventoryStore) -> None:
    names = InventoryNames(renamed)
    pay_db, shop_db = renamed.id_of("vm", "pay/db"), renamed.id_of("vm", "shop/db")
    assert names.ids("vm", "db-01", T0 + 1) == sorted([pay_db, shop_db])
    assert names.ids("vm", "db-01") == [shop_db]
    assert names.ids("vm", "*-01") == sorted(renamed.id_of("vm", k) for k in ("pay/db", "shop/db", "shop/web"))
    assert names.ids("project", "pay*") == [renamed.id_of("project", "pay")]
    assert names.ids("vm", "nope") == []


def test_vanished_entities_keep_their_last_name() -> None:
    inv = InventoryStore()
    inv.apply(two_tenants(T0))
    gone = two_tenants(T0 + HOUR)
    gone.vms = [v for v in gone.vms if v.key != "shop/web"]
    gone.interfaces = [i for i in gone.interfaces if i.vm != "shop/web"]
    inv.apply(gone)
    web = inv.id_of("vm", "shop/web")
    assert InventoryNames(inv).names("vm", [web]) == {web: "web-01"}
    assert InventoryNames(inv).names("vm", [web], T0 + 2 * HOUR) == {}


def test_resolve_name_filters(renamed: InventoryStore) -> None:
    names = InventoryNames(renamed)
    out = resolve_name_filters(
        {"project": "payments", "server_vm": ["ledger-*", "web-01"], "server_port": 443}, names, None
    )
    assert out == {
        "project_id": [renamed.id_of("project", "pay")],
        "server_vm_id": sorted([renamed.id_of("vm", "pay/db"), renamed.id_of("vm", "shop/web")]),
        "server_port": 443,
    }
    with pytest.raises(NameFilterError, match="no vm named 'db-99'"):
        resolve_name_filters({"vm": "db-99"}, names, T0)
    with pytest.raises(NameFilterError):
        resolve_name_filters({"project": "payments"}, NoNames(), None)
