"""The agent's controller client in process: cached config, hot/restart apply, policy filters, the protocol."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np

from cloudtap.agent.config import AgentConfig, load_agent_config
from cloudtap.agent.config_apply import POLICY_PAUSE, MacSelect
from cloudtap.agent.controller_client import ControllerClient
from cloudtap.agent.runner import Agent
from cloudtap.l7._queue import STAT_NAMES
from cloudtap.schema.packet import PACKET_DTYPE
from cloudtap.server.controller.status import HeartbeatReport, Sample, rates
from cloudtap.ship.server_sink import ShipStats

POLICY = {"active": True, "capture": True, "interfaces": [], "macs": ["fa:16:3e:00:00:01"],
          "bpf": "(ether host fa:16:3e:00:00:01)", "snaplen": None, "store_packets": False, "policies": ["p"]}  # fmt: skip


def config(tmp_path: Path, mode: str = "mirror") -> AgentConfig:
    env = {
        "CLOUDTAP_AGENT__AGENT_ID": "t1", "CLOUDTAP_AGENT__CAPTURE__MODE": mode,
        "CLOUDTAP_AGENT__CAPTURE__MIRROR_BIND": "127.0.0.1", "CLOUDTAP_AGENT__CAPTURE__MIRROR_PORT": "1",
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path), "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false", "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
        "CLOUDTAP_AGENT__CONTROLLER__URL": "http://controller.test", "CLOUDTAP_AGENT__CONTROLLER__TOKEN": "tok",
        "CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE": str(tmp_path / "cache.json"),
        "CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE": str(tmp_path / "credential.json"),
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
    }  # fmt: skip
    return load_agent_config(None, env=env)


def test_a_restart_without_the_server_uses_the_cached_config(tmp_path: Path) -> None:
    doc = {"version": 7, "overlay": {"limits": {"max_pps": 4242}}, "policy": {**POLICY, "snaplen": 512}}
    (tmp_path / "cache.json").write_text(json.dumps(doc))
    agent = Agent(config(tmp_path))
    assert agent.config.limits.max_pps == 4242 and agent.limiter.max_pps == 4242
    assert agent.config.capture.snaplen == 512  # restart-required keys apply at start
    assert agent.base_config.limits.max_pps == 0
    client = ControllerClient(agent)
    client.start()
    client.stop()
    assert client.applied_version == 7 and client.restart_required == []
    assert isinstance(agent.workers[0].pipeline.packet_filter, MacSelect)


def test_apply_hot_keys_now_and_report_restart_ones(tmp_path: Path) -> None:
    agent = Agent(config(tmp_path))
    client = ControllerClient(agent)
    hot = client.apply({"version": 3, "overlay": {"limits": {"max_pps": 1000, "max_cpu_cores": 0.5},
                                                  "capture": {"snaplen": 1024}}, "policy": POLICY})  # fmt: skip
    assert "limits.max_pps" in hot and "policy.macs" in hot
    assert agent.limiter.max_pps == 1000 and all(w._limiter is agent.limiter for w in agent.workers)
    assert agent.governor.max_cpu_cores == 0.5
    assert client.restart_required == ["capture.snaplen"] and agent.config.capture.snaplen == 256
    assert json.loads((tmp_path / "cache.json").read_text())["version"] == 3
    select = agent.workers[0].pipeline.packet_filter
    assert isinstance(select, MacSelect) and select.mac_texts == ["fa:16:3e:00:00:01"]
    client.apply({"version": 4, "overlay": {}, "policy": {**POLICY, "capture": False, "macs": [], "bpf": None}})
    assert POLICY_PAUSE in agent.status().paused_by and client.restart_required == []
    client.apply({"version": 5, "overlay": {}, "policy": {}})
    assert POLICY_PAUSE not in agent.status().paused_by
    assert not isinstance(agent.workers[0].pipeline.packet_filter, MacSelect)
    client.apply({"version": 6, "overlay": {"capture": {"bpf": "tcp port"}}})  # does not compile
    assert "version 6" in client.config_error and agent.config.capture.bpf is None
    client.stop()


def test_mac_select_keeps_selected_inner_macs() -> None:
    packets = np.zeros(4, PACKET_DTYPE)
    packets["src_mac"] = [0xFA163E000001, 0x1, 0x2, 0x3]
    packets["dst_mac"] = [0x9, 0x9, 0xFA163E000001, 0x9]
    keep = MacSelect(["FA:16:3E:00:00:01"], inner=lambda f, p: np.array([True, True, False, True]))(None, packets)
    assert keep.tolist() == [True, False, False, False]


def test_protocol_register_heartbeat_fetch_and_reregister(tmp_path: Path) -> None:
    calls: list[str] = []
    state: dict[str, Any] = {"issued": 0, "current": None}

    def handler(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        calls.append(f"{request.method} {request.url.path} {auth.removeprefix('Bearer ')}")
        path = request.url.path
        if path.endswith("/register"):
            body = json.loads(request.content)
            assert body["name"] == "t1" and body["machine_id"] and body["mode"] == "mirror"
            if auth not in ("Bearer tok", f"Bearer {state['current']}"):
                return httpx.Response(401, json={"detail": "unknown or replaced credential"})
            state["issued"] += 1
            state["current"] = f"cta_ag-1_s{state['issued']}"
            return httpx.Response(200, json={"agent_id": "ag-1", "heartbeat_s": 2.0, "group": "g",
                                             "credential": state["current"], "control_key": f"k{state['issued']}"})  # fmt: skip
        if auth != f"Bearer {state['current']}":
            return httpx.Response(401, json={"detail": "unknown or replaced credential"})
        if path.endswith("/heartbeat"):
            report: dict[str, Any] = json.loads(request.content)
            assert "captured_packets" in report and "interfaces" in report and "control_url" in report
            return httpx.Response(200, json={"config_version": 2, "heartbeat_s": 2.0, "server_time": 0})
        if path.endswith("/config"):
            return httpx.Response(200, json={"version": 2, "overlay": {"limits": {"max_pps": 77}}, "policy": {}})
        return httpx.Response(404)

    agent = Agent(config(tmp_path))
    client = ControllerClient(agent, transport=httpx.MockTransport(handler))
    client.heartbeat_once()
    assert client.agent_id == "ag-1" and client.heartbeat_s == 2.0
    assert client.applied_version == 2 and agent.limiter.max_pps == 77
    assert calls[:3] == ["POST /api/v1/agents/register tok", "POST /api/v1/agents/ag-1/heartbeat cta_ag-1_s1",
                         "GET /api/v1/agents/ag-1/config cta_ag-1_s1"]  # the bootstrap token only registers
    saved = tmp_path / "credential.json"
    assert saved.stat().st_mode & 0o777 == 0o600 and json.loads(saved.read_text())["control_key"] == "k1"
    assert agent.control_keys() == ["k1"]
    state["current"] = "cta_ag-1_other"  # the server rotated it (another registration) or lost its state
    client.heartbeat_once()
    assert calls[3:] == ["POST /api/v1/agents/ag-1/heartbeat cta_ag-1_s1",  # refused: 401
                         "POST /api/v1/agents/register tok", "POST /api/v1/agents/ag-1/heartbeat cta_ag-1_s2"]
    assert agent.control_keys() == ["k2"]
    again = Agent(config(tmp_path))  # a restart registers with the credential it kept, not the bootstrap token
    assert again.credentials is not None and again.credentials.credential() == "cta_ag-1_s2"
    second = ControllerClient(again, transport=httpx.MockTransport(handler))
    second.register()
    assert calls[-1] == "POST /api/v1/agents/register cta_ag-1_s2" and again.control_keys() == ["k3"]
    assert calls.count("GET /api/v1/agents/ag-1/config cta_ag-1_s1") == 1  # only when the version changes
    client.stop()
    second.stop()


# The heartbeat carries the figures "why no data?" needs apart: pps-cap drops, kernel drops, CPU throttling,
# and the shipper's dead letters, retries and last HTTP answer.
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


def test_report_carries_the_request_parser_figures(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg = cfg.model_copy(update={"requests": cfg.requests.model_copy(update={"enabled": True})})
    agent = Agent(cfg)
    parser = agent.workers[0].requests
    assert parser is not None
    names = list(STAT_NAMES)
    parser.st[names.index("requests")] = 40
    parser.st[names.index("table_full")] = 3
    client = ControllerClient(agent)
    report = HeartbeatReport.model_validate(client.report())
    client.stop()
    assert (report.requests_parsed, report.request_drops) == (40, 3)
    off = HeartbeatReport.model_validate(ControllerClient(Agent(config(tmp_path / "off"))).report())
    assert off.requests_parsed == 0 and off.request_drops == 0  # requests off: no figures sent
