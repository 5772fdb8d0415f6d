"""A replay paused and resumed (user stop/start, a breaker) goes on where it stopped; a finished one stays done.

Before: a pause closed the replay and a resume reopened it from the first packet, so every pause of a
replaying agent (e.g. the load breaker on a busy host) stored the capture's start again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.compute as pc
from agent_replay import ONE_TCP, replay_config

from cloudtap.agent.runner import Agent
from cloudtap.agent.sinks import MemorySink


def _wait(predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_pause_and_resume_replays_every_packet_once(shared_pcaps: Path, tmp_path: Path) -> None:
    sink = MemorySink()
    cfg = replay_config(shared_pcaps / ONE_TCP, tmp_path, replay_speed=4.0, replay_stay=True)  # ~4 s of packets
    agent = Agent(cfg, sink=sink)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        _wait(lambda: agent.status().captured_packets > 0)
        agent.set_capturing(False)
        paused_at = agent.status().captured_packets
        time.sleep(0.5)
        assert 0 < paused_at < 36 and not agent.status().capturing
        agent.set_capturing(True)
        _wait(lambda: all(w.finished.is_set() for w in agent.workers))
        agent.set_capturing(True)  # a start after the end (a breaker clearing) must not replay again
        time.sleep(0.5)
        assert agent.status().captured_packets == 36
    finally:
        agent.shutdown()
        runner.join(10)
    flows = sink.table("flows")
    assert flows is not None and pc.sum(flows["packets_c2s"]).as_py() + pc.sum(flows["packets_s2c"]).as_py() == 36
