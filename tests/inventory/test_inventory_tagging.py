"""Tagging flow and edge batches with cloud ids: segments, MACs, CIDRs, history, and a metered synth capture."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from invdata import HOUR, T0, two_tenants

from cloudtap.inventory.connectors.agents import snapshot_from_agents
from cloudtap.inventory.connectors.static import load_static
from cloudtap.inventory.model import Interface, Network, Project, Snapshot, Subnet
from cloudtap.inventory.names_store import InventoryNames
from cloudtap.inventory.store import InventoryStore
from cloudtap.inventory.tagging import Tagger, identity_columns


def flows(rows: list[dict]) -> pa.Table:
    cols = {
        "first_ns": pa.array([r.get("t", T0 + 1) for r in rows], pa.int64()),
        "client_ip": pa.array([r["c"] for r in rows], pa.string()),
        "server_ip": pa.array([r["s"] for r in rows], pa.string()),
        "vlan": pa.array([r.get("vlan", 0) for r in rows], pa.uint16()),
        "tunnel_id": pa.array([r.get("vni", 0) for r in rows], pa.uint32()),
        "client_mac": pa.array([r.get("cmac", 0) for r in rows], pa.uint64()),
        "server_mac": pa.array([r.get("smac", 0) for r in rows], pa.uint64()),
    }
    return pa.table(cols)


@pytest.fixture
def inv() -> InventoryStore:
    store = InventoryStore()
    store.apply(two_tenants(T0))
    return store


def test_overlapping_tenants_are_told_apart_by_segment(inv: InventoryStore) -> None:
    out = Tagger(inv).tag(
        flows(
            [
                {"c": "10.0.0.9", "s": "10.0.0.5", "vlan": 101},  # payments' db
                {"c": "10.0.0.9", "s": "10.0.0.5", "vlan": 102},  # shop's db
                {"c": "10.0.0.9", "s": "10.0.0.5", "vni": 102, "vlan": 7},  # VNI wins over the VLAN
                {"c": "10.0.0.9", "s": "10.0.0.5"},  # no segment: ambiguous server, subnet too
                {"c": "fd00::9", "s": "fd00::77"},  # IPv6: the web VM; an unknown address in a known subnet
                {"c": "192.168.0.11", "s": "8.8.8.8"},  # a host address; the internet
            ]
        )
    )
    assert set(identity_columns()) <= set(out.column_names)
    d = out.to_pydict()
    vm = inv.id_of
    assert d["server_vm_id"] == [vm("vm", "pay/db"), vm("vm", "shop/db"), vm("vm", "shop/db"), 0, 0, 0]
    assert d["server_project_id"] == [vm("project", "pay"), vm("project", "shop"), vm("project", "shop"), 0,
                                      vm("project", "shop"), 0]  # fmt: skip
    assert d["server_host_id"][:2] == [vm("host", "hv-01"), vm("host", "hv-02")]
    assert d["server_subnet_id"][:5] == [vm("subnet", "pay-sub"), vm("subnet", "shop-sub"), vm("subnet", "shop-sub"),
                                         0, vm("subnet", "v6")]  # fmt: skip
    assert d["client_vm_id"][:5] == [vm("vm", "shop/web")] * 5  # unique IP: found without a segment
    assert d["client_host_id"][5] == vm("host", "hv-01") and d["client_vm_id"][5] == 0
    assert set(d["client_region_id"][:5]) == {vm("region", "eu")}
    assert d["server_region_id"][5] == 0


def test_mac_tags_interfaces_without_ips() -> None:
    inv = InventoryStore()
    report = {"agent_id": "a1", "host": "hv-07", "interfaces": [{"name": "vnet0", "mac": "52:54:00:aa:bb:cc",
                                                                  "domain": "instance-0001"}]}  # fmt: skip
    inv.apply(snapshot_from_agents([report], taken_at=T0))
    mac = 0x525400AABBCC
    out = Tagger(inv).tag(flows([{"c": "10.9.9.9", "s": "10.1.1.1", "cmac": mac}, {"c": "10.1.1.1", "s": "10.9.9.9", "smac": mac}]))
    d = out.to_pydict()
    assert d["client_vm_id"] == [inv.id_of("vm", "instance-0001"), 0]
    assert d["server_vm_id"] == [0, inv.id_of("vm", "instance-0001")]
    assert d["client_host_id"][0] == inv.id_of("host", "hv-07")


def test_mac_of_an_interface_with_other_ips_is_not_trusted(inv: InventoryStore) -> None:
    # a routed flow: the source MAC is the payments' db NIC, but the IP is not one of its addresses
    out = Tagger(inv).tag(flows([{"c": "10.7.7.7", "s": "10.0.0.9", "cmac": 0xFA163E000001}]))
    assert out["client_vm_id"].to_pylist() == [0]


def test_flows_get_the_host_their_vm_had_at_their_time(inv: InventoryStore) -> None:
    inv.apply(two_tenants(T0 + 2 * HOUR, db_host="hv-02"))
    tagger = Tagger(inv)
    times = [T0 + HOUR, T0 + 3 * HOUR, T0 - HOUR, T0 + 2 * HOUR]
    out = tagger.tag(flows([{"c": "10.0.0.9", "s": "10.0.0.5", "vlan": 101, "t": t} for t in times]))
    hv1, hv2 = inv.id_of("host", "hv-01"), inv.id_of("host", "hv-02")
    assert out["server_host_id"].to_pylist() == [hv1, hv2, 0, hv2]  # before the inventory: unknown
    assert out["server_vm_id"].to_pylist() == [inv.id_of("vm", "pay/db")] * 2 + [0, inv.id_of("vm", "pay/db")]


def test_existing_ids_are_kept_and_tables_without_addresses_pass(inv: InventoryStore) -> None:
    table = flows([{"c": "10.0.0.9", "s": "10.0.0.5", "vlan": 101}]).append_column(
        "server_vm_id", pa.array([4242], pa.uint32())
    )
    out = Tagger(inv).tag(table)
    assert out["server_vm_id"].to_pylist() == [4242]
    assert out["server_project_id"].to_pylist() == [inv.id_of("project", "pay")]
    plain = pa.table({"x": [1, 2]})
    assert Tagger(inv).tag(plain) is plain


def test_edges_use_time_ns_and_vm_mac_text() -> None:
    inv = InventoryStore()
    inv.apply(Snapshot("static", T0, subnets=[Subnet("s", "s", "10.5.0.0/16")],
                       interfaces=[Interface("i", "fa:16:3e:00:00:09", ("10.5.0.1", "10.5.0.2"))]))  # fmt: skip
    edges = pa.table({
        "time_ns": pa.array([T0, T0], pa.int64()),
        "client_ip": ["10.5.0.1", "10.5.9.9"], "server_ip": ["10.6.0.1", "10.5.0.2"],
        "vlan": pa.array([0, 0], pa.uint16()), "tunnel_id": pa.array([0, 0], pa.uint32()),
        "vm_mac": ["fa:16:3e:00:00:09", ""],
    })  # fmt: skip
    out = Tagger(inv).tag(edges).to_pydict()
    assert out["client_subnet_id"] == [inv.id_of("subnet", "s")] * 2  # by interface, then by CIDR
    assert out["server_subnet_id"] == [0, inv.id_of("subnet", "s")]


def test_every_flow_of_a_synth_capture_gets_its_vms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cloudtap.server.importer import import_tables
    from cloudtap.synth.inventory import static_inventory, write_static_inventory
    from cloudtap.synth.scenario import resolve_scenario, with_overrides
    from cloudtap.synth.writer import write_pcap

    scn = with_overrides(resolve_scenario("small-cloud"), duration="60s", encapsulation="vxlan")
    result = write_pcap(scn, tmp_path / "s.pcap")
    write_static_inventory(scn, tmp_path / "inv.yaml")
    inv = InventoryStore()
    inv.apply(load_static(tmp_path / "inv.yaml"))
    tagger = Tagger(inv)
    imported = import_tables([result.path], tagger=tagger)
    got = imported.tables["flows"].to_pydict()
    names = InventoryNames(inv)
    host_of = {(v["project"], v["name"]): v["host"] for v in static_inventory(scn)["vms"]}
    truth = {(r["client_ip"], r["client_port"], r["server_ip"], r["server_port"]): r for r in result.truth.to_pylist()}
    at = scn.start_ns
    checked = 0
    for i in range(len(got["client_ip"])):
        t = truth[(got["client_ip"][i], got["client_port"][i], got["server_ip"][i], got["server_port"][i])]
        for side in ("client", "server"):
            project, vm = t[f"{side}_project"], t[f"{side}_vm"]
            assert names.names("project", [got[f"{side}_project_id"][i]], at) == {got[f"{side}_project_id"][i]: project}
            assert names.names("vm", [got[f"{side}_vm_id"][i]], at) == {got[f"{side}_vm_id"][i]: vm}
            host_id = got[f"{side}_host_id"][i]
            assert names.names("host", [host_id], at) == {host_id: host_of[(project, vm)]}
            assert got[f"{side}_region_id"][i] == inv.id_of("region", scn.name)
            assert got[f"{side}_subnet_id"][i] == inv.id_of("subnet", f"{project}-subnet")
        checked += 1
    assert checked == result.truth.num_rows > 100
    edges = imported.tables["edges_1s"].to_pydict()
    assert all(v != 0 for v in edges["client_vm_id"]) and all(v != 0 for v in edges["server_vm_id"])


def test_tagging_speed(inv: InventoryStore) -> None:
    """Throughput on 1M rows over 20k VMs (printed; a loose floor guards against per-row Python)."""
    n_vms = 20_000
    big = Snapshot("static", T0, projects=[Project("p", "p")], networks=[Network("n", "n", "p")])
    ips = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(1, n_vms + 1)]
    big.interfaces = [Interface(f"if{i}", f"fa:16:3e:{i >> 16:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}", (ip,), network="n")
                      for i, ip in enumerate(ips)]  # fmt: skip
    store = InventoryStore()
    store.apply(big)
    rng = np.random.default_rng(1)
    n = 1_000_000
    pool = np.asarray(ips + ["172.16.0.1", "8.8.8.8"], dtype=object)
    table = pa.table({
        "first_ns": pa.array(np.full(n, T0 + 5), pa.int64()),
        "client_ip": pa.array(pool[rng.integers(0, pool.size, n)].tolist(), pa.string()),
        "server_ip": pa.array(pool[rng.integers(0, pool.size, n)].tolist(), pa.string()),
        "vlan": pa.array(np.zeros(n, np.uint16)), "tunnel_id": pa.array(np.zeros(n, np.uint32)),
    })  # fmt: skip
    tagger = Tagger(store)
    tagger.tag(table.slice(0, 10))  # build the index once
    started = time.perf_counter()
    out = tagger.tag(table)
    rate = n / (time.perf_counter() - started)
    print(f"tagging: {rate:,.0f} rows/s (1M rows, 20k interfaces)")
    known = pc.is_in(table["client_ip"], value_set=pa.array(ips)).to_numpy(zero_copy_only=False)
    assert np.array_equal(np.asarray(out["client_project_id"]) == store.id_of("project", "p"), known)
    assert rate > 200_000
