"""The agent in mirror mode: ERSPAN copies from two mirrored ports become one set of flows."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from cloudtap.agent.config import load_agent_config
from cloudtap.agent.runner import Agent
from cloudtap.agent.sinks import MemorySink

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw GRE sockets need root")


def inner(i: int, ttl: int) -> bytes:
    frame = (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.5.0.1", dst="10.5.0.2", ttl=ttl, id=i)
        / TCP(sport=41000, dport=5432, seq=1000 + 100 * i, ack=1, flags="PA")
        / (b"q" * 100)
    )
    return bytes(frame)


def erspan2(frame: bytes, session: int, seq: int) -> bytes:
    return struct.pack("!BBHI", 0x10, 0, 0x88BE, seq) + struct.pack("!HHI", (1 << 12), session, 0) + frame


def erspan3(frame: bytes, session: int, seq: int) -> bytes:
    hdr = struct.pack("!HHIHH", (2 << 12), session, 0, 0, 0)
    return struct.pack("!BBHI", 0x10, 0, 0x22EB, seq) + hdr + frame


def test_mirror_mode_meters_once_and_counts_duplicates(tmp_path: Path) -> None:
    env = {
        "CLOUDTAP_AGENT__CAPTURE__MODE": "mirror",
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_KIND": "gre",
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_BIND": "127.0.0.1",
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",  # no Unix socket in /run
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        # The agent runs inside pytest here: the test process (compiler, other tests) is not the grant.
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
        # The two copies of a packet are sent back to back, but a loaded CI machine can hold the sender
        # between them for longer than the 50 ms default window (seen once: 41 of 40).
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_DEDUP_MS": "5000",
    }
    sink = MemorySink()
    agent = Agent(load_agent_config(None, env=env), sink=sink)
    agent.start()
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not agent.status().capturing and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE) as tx:
            for i in range(40):
                tx.sendto(erspan2(inner(i, 64), session=1, seq=i), ("127.0.0.1", 0))  # client VM's port
                tx.sendto(erspan3(inner(i, 63), session=2, seq=i), ("127.0.0.1", 0))  # server VM's port
        deadline = time.monotonic() + 10
        while agent.status().captured_packets < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        agent.shutdown()
        runner.join(5)
    status = agent.status()
    flows = sink.table("flows")
    assert flows is not None
    tcp = flows.filter(pc.equal(flows["server_port"], 5432))
    assert pc.sum(tcp["packets_c2s"]).as_py() == 40
    assert set(tcp["tunnel_type"].to_pylist()) == {"erspan2"}
    assert set(tcp["tunnel_id"].to_pylist()) == {1}
    assert status.duplicates == 40
    assert status.captured_packets == 80


def test_records_of_ended_flows_leave_a_quiet_live_agent(tmp_path: Path) -> None:
    """On a quiet link, flows that expired reach the output within a second or so, not at shutdown
    (the meter hands records out only when its buffer fills; the worker drains it every 0.5 s)."""
    env = {
        "CLOUDTAP_AGENT__CAPTURE__MODE": "mirror",
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_KIND": "gre",
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_BIND": "127.0.0.1",
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",  # no Unix socket in /run
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
        "CLOUDTAP_AGENT__METER__IDLE_TIMEOUT_S": "1",
        "CLOUDTAP_AGENT__METER__TCP_IDLE_TIMEOUT_S": "1",
    }
    sink = MemorySink()
    agent = Agent(load_agent_config(None, env=env), sink=sink)
    agent.start()
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not agent.status().capturing and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE) as tx:
            for i in range(10):
                tx.sendto(erspan2(inner(i, 64), session=1, seq=i), ("127.0.0.1", 0))
        deadline = time.monotonic() + 8  # idle timeout 1 s + scan 1 s + drain 0.5 s, with slack
        while sink.table("flows") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.table("flows") is not None, "the expired flow's record stayed in the meter"
    finally:
        agent.shutdown()
        runner.join(5)
