"""The agent exports IPFIX beside its sink: records reach nfcapd; a dead collector costs the sink nothing."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest
from ipfix_oracle import capture, nfcapd, nfdump_flows

from cloudtap.agent.config import AgentConfig, load_agent_config
from cloudtap.agent.control import AgentCollector
from cloudtap.agent.runner import Agent
from cloudtap.agent.sinks import MemorySink
from cloudtap.errors import ConfigError

CAPTURE = "arkime/tests/pcap/arkime_synthetic.pcap"


def _config(pcap: Path, tmp_path: Path, targets: str) -> AgentConfig:
    env = {
        "CLOUDTAP_AGENT__CAPTURE__MODE": "replay",
        "CLOUDTAP_AGENT__CAPTURE__REPLAY_FILE": str(pcap),
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"),
        "CLOUDTAP_AGENT__OUTPUT__IPFIX": targets,  # a YAML list, as an operator writes it
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__CONTROL__SOCKET": "",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
    }
    return load_agent_config(None, env=env)


def _sink_flows(sink: MemorySink) -> Counter[tuple]:
    table = sink.table("flows")
    assert table is not None
    return Counter(
        (r["client_ip"], r["client_port"], r["server_ip"], r["server_port"], r["proto"], r["packets_c2s"],
         r["bytes_c2s"], r["packets_s2c"], r["bytes_s2c"])
        for r in table.to_pylist()
    )  # fmt: skip


def _closed_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(agent: Agent) -> dict[tuple[str, str], float]:
    out = {}
    for family in AgentCollector(agent).collect():
        for sample in family.samples:
            if sample.name.startswith("cloudtap_agent_ipfix"):
                out[(sample.name, sample.labels["target"])] = sample.value
    return out


@pytest.mark.oracle
def test_agent_records_arrive_at_nfcapd(tmp_path: Path) -> None:
    pcap = capture(CAPTURE)
    with nfcapd() as (port, _, files):
        sink = MemorySink()
        agent = Agent(_config(pcap, tmp_path, f"[{{url: 'udp://127.0.0.1:{port}', mtu: 1200}}]"), sink=sink)
        agent.run()
    expected = _sink_flows(sink)
    got = Counter(
        (r.get("src4_addr") or r.get("src6_addr"), r.get("src_port"), r.get("dst4_addr") or r.get("dst6_addr"),
         r.get("dst_port"), r["proto"], r["in_packets"], r["in_bytes"], r.get("out_packets", 0), r.get("out_bytes", 0))
        for r in nfdump_flows(files)
    )  # fmt: skip
    icmp = {k for k in expected if k[4] in (1, 58)}  # nfdump puts ICMP type/code in dst_port its own way
    assert sum(expected.values()) > 100
    assert Counter({k: v for k, v in got.items() if k[4] not in (1, 58)}) == Counter(
        {k: v for k, v in expected.items() if k not in icmp}
    )
    status = agent.status()
    (counts,) = status.ipfix.values()
    assert (
        counts["records"] == sum(expected.values()) and counts["errors"] == 0 and counts["records_lost"] == 0
    )
    assert (
        _metrics(agent)[("cloudtap_agent_ipfix_records_total", f"udp://127.0.0.1:{port}")]
        == counts["records"]
    )


def test_collector_down_costs_the_sink_nothing(tmp_path: Path) -> None:
    pcap = capture(CAPTURE)
    udp, tcp = _closed_port(socket.SOCK_DGRAM), _closed_port(socket.SOCK_STREAM)
    targets = f"[{{url: 'udp://127.0.0.1:{udp}'}}, {{url: 'tcp://127.0.0.1:{tcp}'}}]"
    sink = MemorySink()
    agent = Agent(_config(pcap, tmp_path, targets), sink=sink)
    agent.run()
    reference = MemorySink()
    Agent(_config(pcap, tmp_path / "ref", "[]"), sink=reference).run()
    assert _sink_flows(sink) == _sink_flows(reference)  # shipping got everything
    status = agent.status()
    total = sum(_sink_flows(sink).values())
    for url in (f"udp://127.0.0.1:{udp}", f"tcp://127.0.0.1:{tcp}"):
        counts = status.ipfix[url]
        assert counts["errors"] > 0, url
        assert counts["records"] + counts["records_lost"] == total, url
        assert _metrics(agent)[("cloudtap_agent_ipfix_errors_total", url)] == counts["errors"]
    assert status.ipfix[f"tcp://127.0.0.1:{tcp}"]["records"] == 0


def test_bad_target_is_a_config_error(tmp_path: Path) -> None:
    for targets in (
        "[{url: 'http://10.0.0.9:4739'}]",
        "[{url: 'udp://10.0.0.9'}]",
        "[{url: 'udp://h:1', mtu: 100}]",
    ):
        with pytest.raises(ConfigError, match="output.ipfix"):
            _config(tmp_path / "x.pcap", tmp_path, targets)
