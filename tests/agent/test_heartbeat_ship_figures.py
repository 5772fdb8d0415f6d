"""The heartbeat carries the figures "why no data?" needs apart: pps-cap drops, kernel drops, CPU throttling,
and the shipper's dead letters, retries and last HTTP answer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from cloudtap.agent.config import AgentConfig, load_agent_config
from cloudtap.agent.controller_client import ControllerClient
from cloudtap.agent.runner import Agent
from cloudtap.server.controller.status import HeartbeatReport, Sample, rates
from cloudtap.ship.server_sink import ShipStats


def config(tmp_path: Path) -> AgentConfig:
    env = {
        "CLOUDTAP_AGENT__AGENT_ID": "t1", "CLOUDTAP_AGENT__CAPTURE__MODE": "mirror",
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_BIND": "127.0.0.1", "CLOUDTAP_AGENT__CAPTURE__MIRROR_PORT": "1",
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path), "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false", "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
        "CLOUDTAP_AGENT__CONTROLLER__URL": "http://controller.test", "CLOUDTAP_AGENT__CONTROLLER__TOKEN": "tok",
        "CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE": str(tmp_path / "cache.json"),
        "CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE": str(tmp_path / "credential.json"),
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
    }  # fmt: skip
    return load_agent_config(None, env=env)


def test_report_carries_ship_and_throttle_figures(tmp_path: Path) -> None:
    agent = Agent(config(tmp_path))
    agent.workers[0].counters.pps_limit_drops = 1234
    agent.sink = SimpleNamespace(stats=lambda: ShipStats(dead_letters=2, retries=5, last_status=503))
    agent.governor.throttled_s = 1.5
    client = ControllerClient(agent)
    report = HeartbeatReport.model_validate(client.report())
    client.stop()
    assert report.pps_limit_drops == 1234 and report.kernel_drops == 0
    assert (report.ship_dead_letters, report.ship_retries, report.ship_last_status) == (2, 5, 503)
    assert report.throttled_s == 1.5


def test_rates_keep_each_kind_of_drop_apart() -> None:
    a = Sample.of(0.0, HeartbeatReport(kernel_drops=1, pps_limit_drops=10, meter_drops=0, ship_dead_letters=0))
    b = Sample.of(10.0, HeartbeatReport(kernel_drops=4, pps_limit_drops=110, meter_drops=2, ship_dead_letters=3,
                                        ship_retries=7, throttled_s=0.5))  # fmt: skip
    r = rates([a, b])
    assert (r["drops"], r["kernel_drops"], r["pps_limit_drops"], r["meter_drops"]) == (105, 3, 100, 2)
    assert (r["dead_letters"], r["ship_retries"], r["throttled_s"]) == (3, 7, 0.5)
    assert rates([])["pps_limit_drops"] == 0 and rates([a])["kernel_drops"] == 0
