"""The agent inside its grant: pps cap with counted drops, CPU governor, breakers that trip and recover."""

from __future__ import annotations

import resource
import threading
import time
from pathlib import Path

import pytest
from agent_replay import replay_config

from cloudtap.agent.guard import HostBreakers, HostSample
from cloudtap.agent.runner import Agent
from cloudtap.agent.sinks import MemorySink


@pytest.fixture(scope="module")
def cloud_pcap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    path = tmp_path_factory.mktemp("cloud") / "cloud.pcap"
    result = write_pcap(with_overrides(builtin_scenario("small-cloud"), duration="20m"), path)
    return path, result.packets


def replay_agent(pcap: Path, tmp_path: Path, speed: float | None = None, **limits: object) -> Agent:
    capture = {"replay_speed": speed} if speed is not None else {}
    return Agent(replay_config(pcap, tmp_path, limits=limits, **capture), sink=MemorySink())


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_pps_cap_drops_are_counted_and_cpu_stays_in_grant(cloud_pcap: tuple[Path, int], tmp_path: Path) -> None:
    pcap, packets = cloud_pcap
    agent = replay_agent(pcap, tmp_path, max_pps=50_000, max_cpu_cores=0.5)
    agent.start()
    thread = threading.Thread(target=agent.run, daemon=True)
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    thread.start()
    time.sleep(3.0)
    cpu1, wall1 = cpu_seconds(), time.monotonic()
    agent.shutdown()
    thread.join(10)
    status = agent.status()
    used = (cpu1 - cpu0) / (wall1 - wall0)
    assert used < 0.5 * 1.3, f"agent used {used:.2f} cores with a 0.5 core grant"
    assert status.pps_limit_drops > 0
    # Everything read is either metered or counted as dropped by the cap: nothing vanishes.
    metered = sum(w.meter.stats.packets for w in agent.workers)
    assert metered + status.pps_limit_drops == sum(w.counters.packets + w.counters.pps_limit_drops for w in agent.workers)
    assert status.captured_packets < packets


def test_breaker_pauses_capture_and_resumes_when_healthy(cloud_pcap: tuple[Path, int], tmp_path: Path) -> None:
    pcap, _ = cloud_pcap
    agent = replay_agent(pcap, tmp_path, speed=0.01)  # slow replay: capture stays open
    sample = {"load1": 0.1}

    def probe() -> HostSample:
        return HostSample(load1=sample["load1"], cores=2, mem_available_mib=8000.0, disk_free_mib=50_000.0)

    agent.breakers = HostBreakers(agent.config.breakers.model_copy(update={"hold_s": 0.0}), tmp_path, probe=probe)
    agent.start()
    try:
        deadline = time.monotonic() + 5
        while not agent.status().capturing and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent.status().capturing
        sample["load1"] = 50.0  # 25 per core: over the 4.0 threshold
        agent.housekeeping()
        status = agent.status()
        assert any("load" in reason for reason in status.paused_by)
        deadline = time.monotonic() + 1.0
        while agent.status().capturing and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not agent.status().capturing
        sample["load1"] = 0.2
        agent.housekeeping()
        assert agent.status().paused_by == []
        deadline = time.monotonic() + 1.0
        while not agent.status().capturing and time.monotonic() < deadline:
            time.sleep(0.02)
        assert agent.status().capturing
        assert agent.status().breaker_trips == 1
    finally:
        agent.shutdown()
        agent._finish()
