"""Capture policies that keep payload, in the agent: each frame is cut to the snap length of the policy that
kept it, and requests are parsed only in the frames of policies that ask for them (docs/requests.md,
"Payload per policy"); a policy asking for requests turns the agent's parser on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from agent_replay import replay_config
from test_agent_requests import Shipped, _sorted

from cloudtap.agent.config import AgentConfig
from cloudtap.agent.config_apply import policy_filter_of
from cloudtap.agent.controller_client import document_config
from cloudtap.agent.runner import Agent
from cloudtap.l7 import parse_file
from cloudtap.l7.records import requests_to_arrow
from cloudtap.ship.server_sink import ServerSink
from cloudtap.ship.spool import Spool
from cloudtap.ship.transport import MockTransport

HTTP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/4KHttpRequests.pcap"
SNAPLEN = 200  # the payload policy's snap length: request lines survive, most bodies do not


def _policy(requests: bool) -> dict:
    return {"active": True, "capture": True, "bpf": "tcp port 80", "filters": [
        {"policy": "web", "select": "", "bpf": "tcp port 80", "snaplen": SNAPLEN, "requests": requests,
         "payload_bytes": SNAPLEN - 144},
    ]}  # fmt: skip


def _run(pcap: Path, tmp_path: Path, requests: bool) -> tuple[Agent, Shipped]:
    base = replay_config(pcap, tmp_path)  # no cgroup (the agent runs inside pytest), no Unix socket
    base = base.model_copy(update={"agent_id": "hv-policy",
                                   "breakers": base.breakers.model_copy(update={"max_load_per_core": 1000.0})})
    cfg = document_config(base, {"overlay": {}, "policy": _policy(requests)})
    shipped = Shipped()
    sink = ServerSink("hv-policy", MockTransport(shipped), Spool(tmp_path / "spool", 50_000_000, first_seq=1),
                      flush_interval_s=0.1)  # fmt: skip
    agent = Agent(cfg, sink=sink)
    agent.run()
    return agent, shipped


def test_a_policy_asking_for_requests_turns_the_parser_on() -> None:
    base = AgentConfig()
    assert not document_config(base, {"overlay": {}, "policy": _policy(False)}).requests.enabled
    cfg = document_config(base, {"overlay": {}, "policy": _policy(True)})
    assert cfg.requests.enabled
    pf = policy_filter_of(cfg)
    assert pf is not None and pf.any_requests and pf.max_snaplen == SNAPLEN
    mirrored = cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"mode": "mirror"})})
    assert policy_filter_of(mirrored) is None  # outer packets: the policy's MACs select inside (MacSelect)


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) is not installed")
def test_requests_parsed_in_frames_cut_to_the_policy_snaplen(shared_pcaps: Path, tmp_path: Path) -> None:
    pcap = shared_pcaps / HTTP
    if not pcap.is_file():
        pytest.skip(f"{HTTP} is not in ../shared/pcaps")
    agent, shipped = _run(pcap, tmp_path, requests=True)
    # the oracle: editcap cuts every frame to the snap length, parse_file reads what the policy keeps
    cut = tmp_path / "cut.pcap"
    subprocess.run(["editcap", "-s", str(SNAPLEN), str(pcap), str(cut)], check=True, capture_output=True)
    expected = parse_file(cut, bpf="tcp port 80").requests
    assert len(expected) > 100
    got = shipped.table("requests")
    assert got is not None
    assert _sorted(got).equals(_sorted(requests_to_arrow(expected)))
    assert agent.workers[0].pipeline.filter is agent.policy_filter
    assert agent.policy_filter is not None and agent.policy_filter.matched > 0


def test_no_requests_from_a_policy_that_does_not_ask(shared_pcaps: Path, tmp_path: Path) -> None:
    pcap = shared_pcaps / HTTP
    if not pcap.is_file():
        pytest.skip(f"{HTTP} is not in ../shared/pcaps")
    base = AgentConfig.model_validate({"requests": {"enabled": True}})  # parser on by hand, policy says no
    cfg = document_config(base, {"overlay": {}, "policy": _policy(False)})
    pf = policy_filter_of(cfg)
    assert pf is not None and not pf.any_requests
    agent, shipped = _run(pcap, tmp_path, requests=False)
    assert shipped.table("requests") is None  # requests.enabled stays off: nothing parsed, nothing shipped
    assert shipped.table("flows") is not None
