"""The broker inside the agent: hot apply from a controller document, counters in /status, /metrics and the
heartbeat; and a live agent on a virtual hypervisor whose broker section changes while it runs."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from test_broker_encap import batch, udp_frame

from cloudtap.agent.config import AgentConfig, load_agent_config
from cloudtap.agent.config_apply import apply_hot
from cloudtap.agent.config_overlay import changed_keys
from cloudtap.agent.control import AgentCollector
from cloudtap.agent.controller_client import ControllerClient
from cloudtap.agent.runner import Agent
from cloudtap.broker.config import BrokerSection
from cloudtap.server.controller.status import HeartbeatReport


def agent_config(tmp_path: Path, **extra: str) -> AgentConfig:
    env = {
        "CLOUDTAP_AGENT__AGENT_ID": "b1", "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0", "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false", "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
        "CLOUDTAP_AGENT__BREAKERS__MAX_LOAD_PER_CORE": "1000",  # a busy test machine must not pause capture
        **extra,
    }  # fmt: skip
    return load_agent_config(None, env=env)


@contextmanager
def udp_receiver() -> Iterator[tuple[socket.socket, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    try:
        yield sock, sock.getsockname()[1]
    finally:
        sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    try:
        while True:
            out.append(sock.recv(65536))
    except TimeoutError:
        return out


def broker_doc(port: int, truncate: int = 0, enabled: bool = True) -> dict[str, Any]:
    return {"enabled": enabled,
            "destinations": [{"name": "tool", "encap": "vxlan", "address": "127.0.0.1", "port": port, "vni": 7}],
            "rules": [{"name": "all", "interfaces": ["tap*"], "truncate": truncate, "destinations": ["tool"]}]}  # fmt: skip


def test_controller_document_hot_applies_and_counters_are_reported(tmp_path: Path) -> None:
    cfg = agent_config(
        tmp_path, CLOUDTAP_AGENT__CAPTURE__MODE="mirror", CLOUDTAP_AGENT__CAPTURE__MIRROR_BIND="127.0.0.1",
        CLOUDTAP_AGENT__CONTROLLER__URL="http://controller.test", CLOUDTAP_AGENT__CONTROLLER__TOKEN="tok",
        CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE=str(tmp_path / "cache.json"),
        CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE=str(tmp_path / "credential.json"),
    )  # fmt: skip
    agent = Agent(cfg)
    client = ControllerClient(agent)
    agent.points.register("tap0")
    frames = batch([udp_frame(300), udp_frame(301)])
    pipeline = agent.workers[0].pipeline
    with udp_receiver() as (sock, port):
        pipeline.feed(dataclasses.replace(frames, ts_ns=frames.ts_ns - 10**9))  # broker off: nothing
        hot = client.apply({"version": 2, "overlay": {"broker": broker_doc(port, truncate=100)}})
        assert "broker.rules" in hot and client.restart_required == [] and agent.config.broker.enabled
        pipeline.feed(frames)  # (each feed a second later: mirror dedup would drop a repeat)
        got = drain(sock)
        assert [g[8:] for g in got] == [bytes(frames.data[o : o + 100]) for o in frames.offset]
        assert {g[:8] for g in got} == {bytes([8, 0, 0, 0, 0, 0, 7, 0])}
        client.apply({"version": 3, "overlay": {}, "broker": broker_doc(port, truncate=0)})  # as the controller sends it
        pipeline.feed(dataclasses.replace(frames, ts_ns=frames.ts_ns + 10**9))
        assert [len(g) - 8 for g in drain(sock)] == frames.cap_len.tolist()
        client.apply({"version": 4, "overlay": {"broker": broker_doc(port, enabled=False)}})
        pipeline.feed(dataclasses.replace(frames, ts_ns=frames.ts_ns + 2 * 10**9))
        assert drain(sock) == []
    status = agent.status().broker
    assert status["destinations"]["tool"]["packets"] == 4 and status["rules"]["all"]["matched"] == 4
    sent = (100 + 36) * 2 + sum(int(n) + 36 for n in frames.cap_len)  # VXLAN + UDP + IPv4 headers
    assert status["destinations"]["tool"]["bytes"] == sent and status["enabled"] is False
    report = client.report()
    assert (
        report["forwarded_packets"] == 4
        and report["forwarded_bytes"] == sent
        and report["forward_drops"] == 0
    )
    assert report["broker"] == {"tool": {"packets": 4, "bytes": sent, "drops": 0}}
    assert HeartbeatReport.model_validate(report).forwarded_bytes == sent
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    text = generate_latest(registry).decode()
    assert 'cloudtap_agent_forwarded_packets_total{agent="b1",destination="tool"} 4.0' in text
    assert 'cloudtap_agent_forward_drops_total{agent="b1",destination="tool",reason="cap"} 0.0' in text
    assert 'cloudtap_agent_broker_fuse_open{agent="b1"} 0.0' in text
    client.stop()
    agent.broker.close()


def test_a_bad_rule_is_a_config_error_and_changes_nothing(tmp_path: Path) -> None:
    cfg = agent_config(
        tmp_path, CLOUDTAP_AGENT__CAPTURE__MODE="mirror", CLOUDTAP_AGENT__CAPTURE__MIRROR_BIND="127.0.0.1",
        CLOUDTAP_AGENT__CONTROLLER__URL="http://controller.test", CLOUDTAP_AGENT__CONTROLLER__TOKEN="tok",
        CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE=str(tmp_path / "cache.json"),
        CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE=str(tmp_path / "credential.json"),
    )  # fmt: skip
    agent = Agent(cfg)
    client = ControllerClient(agent)
    doc = broker_doc(9)
    doc["rules"][0]["bpf"] = "udp port"
    assert client.apply({"version": 2, "overlay": {"broker": doc}}) == []
    assert "bpf" in client.config_error and not agent.config.broker.enabled
    doc["rules"][0]["destinations"] = ["nowhere"]
    client.apply({"version": 3, "overlay": {"broker": doc}})
    assert "unknown destinations" in client.config_error
    client.stop()


def hot_apply(agent: Agent, section: BrokerSection) -> list[str]:
    """What the controller client does with a new document (every broker key is hot)."""
    new = agent.config.model_copy(update={"broker": section})
    changed = changed_keys(agent.config, new)
    assert set(changed.values()) == {"hot"}
    apply_hot(agent, new, list(changed))
    agent.config = new
    return list(changed)


def test_live_agent_broker_changes_without_restart(tmp_path: Path) -> None:
    import pytest
    from broker_rig import Tcpdump, chop, kill_captures, tools_missing

    from netns import VirtualNetwork, netns_available

    if not netns_available()[0] or tools_missing():
        pytest.skip(netns_available()[1] or tools_missing())
    with VirtualNetwork(prefix="bh") as net, VirtualNetwork(prefix="bht", bridge=False) as toolnet:
        vm1 = net.add_vm("vm1", "10.97.1.1/24")
        vm2 = net.add_vm("vm2", "10.97.1.2/24")
        tool = toolnet.add_vm("tool", "10.97.2.2/24")
        import subprocess

        subprocess.run(["ip", "addr", "add", "10.97.2.1/24", "dev", tool.tap_name], check=True)
        cfg = agent_config(
            tmp_path, CLOUDTAP_AGENT__CAPTURE__INTERFACE_PATTERN=f"^tap{net.uid}",
            CLOUDTAP_AGENT__CAPTURE__SNAPLEN="2048", CLOUDTAP_AGENT__CAPTURE__RING_BLOCK_SIZE=str(1 << 18),
            CLOUDTAP_AGENT__CAPTURE__RING_BLOCK_COUNT="8",
            CLOUDTAP_AGENT__CAPTURE__LIBVIRT_DIRS=str([str(tmp_path / "libvirt")]),
        )  # fmt: skip
        agent = Agent(cfg)
        agent.start()
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 5
            while not {vm1.tap_name, vm2.tap_name} <= set(agent.status().interfaces):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            capture = Tcpdump(tmp_path / "tool.pcap", "eth0", tool.netns, "ip proto 47")
            tap = Tcpdump(tmp_path / "tap.pcap", vm1.tap_name, expr="udp port 5001")
            with vm2.udp_sink(5000), vm2.udp_sink(5001):
                vm1.send_udp(vm2.ip, 5000, count=10, size=200)  # broker off
                section = BrokerSection.model_validate({
                    "enabled": True, "destinations": [{"name": "ids", "encap": "erspan2", "address": tool.ip}],
                    "rules": [{"name": "r", "interfaces": [vm1.tap_name], "bpf": "udp port 5001", "truncate": 96,
                               "destinations": ["ids"]}]})  # fmt: skip
                hot_apply(agent, section)
                vm1.send_udp(vm2.ip, 5001, count=10, size=200)  # right after the apply: forwarded
                time.sleep(0.5)
                hot_apply(agent, section.model_copy(update={"enabled": False}))
                vm1.send_udp(vm2.ip, 5001, count=10, size=200)  # off again
                time.sleep(0.5)
            tap.stop()
            capture.stop()
            inner = chop(tmp_path / "tool.pcap", tmp_path / "inner.pcap", head=14 + 20 + 16)
            cut = chop(tmp_path / "tap.pcap", tmp_path / "cut.pcap", snap=96)
            assert len(cut) == 20 and sorted(inner) == sorted(cut[:10])
            status = agent.status()
            assert status.broker["destinations"]["ids"]["packets"] == 10 and status.captured_packets >= 30
        finally:
            kill_captures()
            agent.shutdown()
            thread.join(5)
        assert np.all(np.array([w.counters.errors for w in agent.workers]) == 0)
