"""IPs seen per VM port, learned from flow records: the VM side by MAC, vectorised, bounded."""

from __future__ import annotations

import ipaddress
import time

import numpy as np
import pyarrow as pa

from cloudtap.agent.identity import ObservationPoints
from cloudtap.agent.port_addresses import PortAddresses, SeenAddress, mac_to_int
from cloudtap.meter.records import flows_to_arrow
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.schema.packet import IPV4_MAPPED_LO

VM_MAC = "02:00:00:00:00:01"
ROUTER = 0x02AA00000001
T = 1_700_000_000 * 10**9


def _hi_lo(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return 0, IPV4_MAPPED_LO | int(addr)
    return int(addr) >> 64, int(addr) & ((1 << 64) - 1)


def flows(rows: list[dict]) -> pa.Table:  # type: ignore[type-arg]
    """Flow records: c/s IPs, cmac/smac, point, first/last."""
    out = np.zeros(len(rows), FLOW_DTYPE)
    for i, r in enumerate(rows):
        out[i]["client_hi"], out[i]["client_lo"] = _hi_lo(r["c"])
        out[i]["server_hi"], out[i]["server_lo"] = _hi_lo(r["s"])
        out[i]["client_mac"], out[i]["server_mac"] = r.get("cmac", 0), r.get("smac", 0)
        out[i]["interface"] = r.get("point", 0)
        out[i]["first_ns"], out[i]["last_ns"] = r.get("first", T), r.get("last", T)
        out[i]["ip_ver"] = 4 if "." in r["c"] else 6
    return flows_to_arrow(out)


def test_the_vm_side_is_the_side_with_the_vm_mac() -> None:
    vm = mac_to_int(VM_MAC)
    learner = PortAddresses(clock=lambda: T)
    macs = np.array([vm, 0], np.uint64)
    table = flows([
        {"c": "10.0.0.5", "s": "10.0.9.9", "cmac": vm, "smac": ROUTER, "first": T - 50, "last": T - 40},
        {"c": "10.0.9.8", "s": "10.0.0.5", "cmac": ROUTER, "smac": vm, "first": T - 60, "last": T - 10},
        {"c": "10.0.0.6", "s": "10.0.9.9", "cmac": vm, "smac": ROUTER, "first": T - 30, "last": T - 20},
        {"c": "10.7.7.7", "s": "10.7.7.8", "cmac": ROUTER, "smac": ROUTER + 1},  # not the VM's frames (flooded)
        {"c": "10.1.1.1", "s": "10.1.1.2", "cmac": vm, "smac": ROUTER, "point": 1},  # point 1: no VM behind it
        {"c": "0.0.0.0", "s": "255.255.255.255", "cmac": vm, "smac": 0xFFFFFFFFFFFF},  # DHCP discover
        {"c": "fe80::1", "s": "ff02::2", "cmac": vm, "smac": 0x333300000002},  # IPv6 link-local
    ])  # fmt: skip
    assert learner.observe(table, macs) == 2
    assert learner.seen() == {0: [SeenAddress("10.0.0.5", T - 60, T - 10), SeenAddress("10.0.0.6", T - 30, T - 20)]}
    # a later batch widens the interval; tables without MACs (edges) teach nothing
    learner.observe(flows([{"c": "10.0.0.5", "s": "10.0.9.9", "cmac": vm, "first": T, "last": T + 5}]), macs)
    assert learner.seen()[0][0] == SeenAddress("10.0.0.5", T - 60, T + 5)
    assert learner.observe(pa.table({"interface": [0], "client_ip": ["10.9.9.9"]}), macs) == 0
    assert learner.observe(table, np.zeros(0, np.uint64)) == 0


def test_bounded_per_port_and_in_ports_most_recent_kept() -> None:
    vm = mac_to_int(VM_MAC)
    learner = PortAddresses(max_ips_per_port=4, max_ports=3, clock=lambda: T)
    spoof = [{"c": f"10.2.{i // 250}.{i % 250}", "s": "10.0.9.9", "cmac": vm, "last": T + i} for i in range(1000)]
    assert learner.observe(flows(spoof), np.array([vm], np.uint64)) == 4  # reduced in the batch already
    assert [a.ip for a in learner.seen()[0]] == ["10.2.3.249", "10.2.3.248", "10.2.3.247", "10.2.3.246"]
    learner.observe(flows([{"c": "10.3.0.1", "s": "10.0.9.9", "cmac": vm, "last": T + 5000}]), np.array([vm], np.uint64))
    assert [a.ip for a in learner.seen()[0]][:2] == ["10.3.0.1", "10.2.3.249"] and len(learner.seen()[0]) == 4
    macs = np.full(6, vm, np.uint64)
    learner.observe(flows([{"c": f"10.4.0.{p}", "s": "10.0.9.9", "cmac": vm, "point": p, "last": T + 6000 + p}
                           for p in range(1, 6)]), macs)  # fmt: skip
    assert sorted(learner.seen()) == [3, 4, 5]  # the ports seen longest ago went first


def test_old_ips_expire_and_points_learn_while_annotating() -> None:
    now = [T]
    points = ObservationPoints(PortAddresses(max_age_s=60, clock=lambda: now[0]))
    tap = points.register("tap1", VM_MAC, "instance-1", "uuid-1")
    points.register("eth9")  # a capture interface: no VM
    table = flows([{"c": "10.0.0.5", "s": "10.0.9.9", "cmac": mac_to_int(VM_MAC), "point": tap.point_id}])
    annotated = points.annotate(table)
    assert annotated["vm_mac"].to_pylist() == [VM_MAC]
    assert [a.ip for a in points.addresses.seen()[tap.point_id]] == ["10.0.0.5"]
    now[0] = T + 61 * 10**9
    assert points.addresses.seen() == {}
    now[0] = T
    points.annotate(table)
    points.register("tap1", "02:00:00:00:00:02", "instance-2", "uuid-2")  # another VM got the tap name
    assert points.addresses.seen() == {}


def test_learning_is_vectorised() -> None:
    n = 200_000
    rng = np.random.default_rng(1)
    recs = np.zeros(n, FLOW_DTYPE)
    vm_macs = np.arange(1, 65, dtype=np.uint64) + 0x020000000000
    point = rng.integers(0, 64, n)
    recs["interface"] = point
    recs["client_mac"] = vm_macs[point]
    recs["server_mac"] = ROUTER
    recs["client_lo"] = IPV4_MAPPED_LO | (0x0A000000 + point * 4 + rng.integers(0, 4, n)).astype(np.uint64)
    recs["server_lo"] = IPV4_MAPPED_LO | rng.integers(0x0B000000, 0x0B00FFFF, n).astype(np.uint64)
    recs["first_ns"] = recs["last_ns"] = T
    table = flows_to_arrow(recs)
    learner = PortAddresses(clock=lambda: T)
    started = time.perf_counter()
    assert learner.observe(table, vm_macs) == 256
    assert time.perf_counter() - started < 1.0
    assert all(len(v) == 4 for v in learner.seen().values()) and len(learner.seen()) == 64
