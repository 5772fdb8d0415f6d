"""Tagging mirrored records: an ERSPAN session id is not a segment; the record's VM MAC names one side only."""

from __future__ import annotations

import pyarrow as pa
from invdata import T0, two_tenants

from cloudtap.inventory.connectors.agents import snapshot_from_agents
from cloudtap.inventory.store import InventoryStore
from cloudtap.inventory.tagging import Tagger


def _flows(rows: list[dict]) -> pa.Table:  # type: ignore[type-arg]
    return pa.table({
        "first_ns": pa.array([T0 + 1] * len(rows), pa.int64()),
        "client_ip": [r["c"] for r in rows], "server_ip": [r["s"] for r in rows],
        "vlan": pa.array([r.get("vlan", 0) for r in rows], pa.uint16()),
        "tunnel_type": [r.get("type", "") for r in rows],
        "tunnel_id": pa.array([r.get("id", 0) for r in rows], pa.uint32()),
        "client_mac": pa.array([r.get("cmac", 0) for r in rows], pa.uint64()),
        "server_mac": pa.array([r.get("smac", 0) for r in rows], pa.uint64()),
        "vm_mac": [r.get("vm", "") for r in rows],
    })  # fmt: skip


def test_an_erspan_session_id_is_not_taken_for_a_segment() -> None:
    inv = InventoryStore()
    inv.apply(two_tenants(T0))  # 10.0.0.5 is pay/db on segment 101 and shop/db on segment 102
    out = Tagger(inv).tag(_flows([
        {"c": "10.0.0.9", "s": "10.0.0.5", "type": "erspan2", "id": 101, "vlan": 102},  # session 101, VLAN 102
        {"c": "10.0.0.9", "s": "10.0.0.5", "type": "vxlan", "id": 101, "vlan": 102},    # VNI 101 wins
    ]))  # fmt: skip
    assert out["server_vm_id"].to_pylist() == [inv.id_of("vm", "shop/db"), inv.id_of("vm", "pay/db")]


def test_the_vm_mac_of_a_record_tags_only_the_side_that_has_it() -> None:
    inv = InventoryStore()  # a VM whose IP the inventory does not know (learned from its host: MAC only)
    report = {"agent_id": "a1", "host": "hv-07", "interfaces": [{"name": "vnet0", "mac": "52:54:00:aa:bb:cc",
                                                                  "domain": "instance-0001"}]}  # fmt: skip
    inv.apply(snapshot_from_agents([report], taken_at=T0))
    vm = inv.id_of("vm", "instance-0001")
    mac = 0x525400AABBCC
    out = Tagger(inv).tag(_flows([
        {"c": "10.9.9.9", "s": "203.0.113.7", "cmac": mac, "smac": 0x0A, "vm": "52:54:00:aa:bb:cc"},  # the router
        {"c": "10.9.9.9", "s": "203.0.113.7", "vm": "52:54:00:aa:bb:cc"},  # no MACs (edges, raw IP): as before
    ])).to_pydict()  # fmt: skip
    assert out["client_vm_id"] == [vm, vm]
    assert out["server_vm_id"] == [0, vm]  # the router's side is not the VM; without MACs it cannot be told
