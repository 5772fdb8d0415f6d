"""The agent capturing live on a virtual hypervisor: namespaces as VMs, their taps on a bridge."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cloudtap.agent.config import load_agent_config
from cloudtap.agent.runner import Agent
from cloudtap.agent.sinks import MemorySink
from netns import VirtualNetwork, needs_netns


def live_config(tmp_path: Path, pattern: str, bpf: str | None = None):  # type: ignore[no-untyped-def]
    env = {
        "CLOUDTAP_AGENT__CAPTURE__INTERFACE_PATTERN": pattern,
        "CLOUDTAP_AGENT__CAPTURE__RING_BLOCK_SIZE": str(1 << 18),
        "CLOUDTAP_AGENT__CAPTURE__RING_BLOCK_COUNT": "8",
        "CLOUDTAP_AGENT__CAPTURE__LIBVIRT_DIRS": str([str(tmp_path / "libvirt")]),
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",  # no Unix socket in /run
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        # The agent runs inside pytest here: the test process (compiler, other tests) is not the grant.
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
    }
    if bpf:
        env["CLOUDTAP_AGENT__CAPTURE__BPF"] = bpf
    return load_agent_config(None, env=env)


def wait_until(predicate, timeout_s: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@contextmanager
def running(agent: Agent) -> Iterator[Agent]:
    agent.start()
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: agent.status().capturing)
        yield agent
    finally:
        agent.shutdown()
        thread.join(5)


def udp_packets(flows: pa.Table, tap: str, server_port: int) -> tuple[int, int]:
    """(client->server, server->client) packets of UDP flows to ``server_port`` seen on ``tap``."""
    mask = pc.and_(
        pc.equal(flows["interface_name"], tap),
        pc.and_(pc.equal(flows["proto"], 17), pc.equal(flows["server_port"], server_port)),
    )
    rows = flows.filter(mask)
    return int(pc.sum(rows["packets_c2s"]).as_py() or 0), int(pc.sum(rows["packets_s2c"]).as_py() or 0)


@needs_netns
def test_live_flows_are_exact_per_vm_and_new_vms_are_followed(tmp_path: Path) -> None:
    sink = MemorySink()
    with VirtualNetwork(prefix="cla") as net:
        vm1 = net.add_vm("vm1", "10.78.0.1/24")
        vm2 = net.add_vm("vm2", "10.78.0.2/24")
        agent = Agent(live_config(tmp_path, f"^tap{net.uid}"), sink=sink)
        with running(agent):
            wait_until(lambda: {vm1.tap_name, vm2.tap_name} <= set(agent.status().interfaces))
            with vm2.udp_sink(5000) as received:
                vm1.send_udp(vm2.ip, 5000, count=200, sport=40000)
            assert received.received == 200
            vm3 = net.add_vm("vm3", "10.78.0.3/24")
            latency = wait_until(lambda: vm3.tap_name in agent.status().interfaces, timeout_s=3.0)
            assert latency < 1.5
            time.sleep(0.2)
            with vm1.udp_sink(6000) as received:
                vm3.send_udp(vm1.ip, 6000, count=50, sport=41000)
            assert received.received == 50
            time.sleep(0.3)
        status = agent.status()
    flows = sink.table("flows")
    assert flows is not None
    # One flow per observation point: vm1's and vm2's taps each saw all 200 datagrams.
    assert udp_packets(flows, vm1.tap_name, 5000) == (200, 0)
    assert udp_packets(flows, vm2.tap_name, 5000) == (200, 0)
    assert udp_packets(flows, vm3.tap_name, 6000) == (50, 0)
    assert udp_packets(flows, vm1.tap_name, 6000) == (50, 0)
    assert status.kernel_drops == 0 and status.meter_drops == 0 and status.pps_limit_drops == 0
    assert status.captured_packets == 500
    edges = sink.table("edges_60s")
    assert edges is not None and pc.sum(edges["packets_c2s"]).as_py() == 500


@needs_netns
def test_kernel_filter_and_remote_stop_start(tmp_path: Path) -> None:
    sink = MemorySink()
    with VirtualNetwork(prefix="clb") as net:
        vm1 = net.add_vm("vm1", "10.79.0.1/24")
        vm2 = net.add_vm("vm2", "10.79.0.2/24")
        agent = Agent(live_config(tmp_path, f"^tap{net.uid}", bpf="udp port 5000"), sink=sink)
        with running(agent):
            wait_until(lambda: {vm1.tap_name, vm2.tap_name} <= set(agent.status().interfaces))
            with vm2.udp_sink(5000), vm2.udp_sink(6000):
                vm1.send_udp(vm2.ip, 5000, count=30, sport=40001)
                vm1.send_udp(vm2.ip, 6000, count=40, sport=40002)
            time.sleep(0.3)
            started = time.monotonic()
            agent.set_capturing(False)
            wait_until(lambda: not agent.status().capturing, timeout_s=1.0)
            assert time.monotonic() - started < 1.0
            with vm2.udp_sink(5000):
                vm1.send_udp(vm2.ip, 5000, count=25, sport=40003)  # not captured: stopped
            agent.set_capturing(True)
            wait_until(lambda: agent.status().capturing, timeout_s=1.0)
            with vm2.udp_sink(5000):
                vm1.send_udp(vm2.ip, 5000, count=10, sport=40004)
            time.sleep(0.3)
    flows = sink.table("flows")
    assert flows is not None
    ports = set(flows.filter(pc.equal(flows["proto"], 17))["server_port"].to_pylist())
    assert ports == {5000}
    by_client_port = {
        port: udp_packets(flows.filter(pc.equal(flows["client_port"], port)), vm1.tap_name, 5000)
        for port in (40001, 40003, 40004)
    }
    assert by_client_port == {40001: (30, 0), 40003: (0, 0), 40004: (10, 0)}
