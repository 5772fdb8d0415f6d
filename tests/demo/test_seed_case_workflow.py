"""The seed's incident, end to end: real server and agent processes, the whole workflow through the CLI.

150 VMs on 10 hosts for 3 hours; shop/db-01 pushes a backup to infra/backup-01 at the top of every hour.
The agent replays the capture, ships records to the server, keeps the packets and registers with the
controller; the workflow must find the push from the flow data alone (names from the static inventory).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudtap.capture.bpf import vlan_aware
from cloudtap.demo.stack import Stack, demo_stack
from cloudtap.demo.workflow import Findings, walk


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with demo_stack(tmp_path_factory.mktemp("seed"), "seed-case") as running:
        yield running


@pytest.fixture(scope="module")
def found(stack: Stack) -> Findings:
    return walk(stack)


def test_topology_shows_every_project(found: Findings) -> None:
    assert found.projects == 5
    assert found.topology_edges >= 5


def test_compare_ranks_the_database_push_first_with_its_burst(found: Findings) -> None:
    top = found.top_edge
    assert (top["source_name"], top["target_name"], top["server_port"]) == ("db-01", "backup-01", 873)
    assert top["status"] == "new"  # nothing on that edge in the 15 minutes before
    assert found.bursts, "no burst interval on the top edge"
    assert found.bursts[0]["start"].startswith("2026-11-20T02:00")
    assert 2 <= found.bursts[0]["buckets"] <= 4  # the backup lasts 3 minutes


def test_drill_down_names_the_peer_and_a_one_way_push(found: Findings) -> None:
    assert found.main_peer["key"] == "backup-01"
    assert found.main_peer["share"] > 0.9
    push = found.push
    assert push is not None
    assert push["direction"] == "c2s" and push["ratio"] > 20
    assert (push["from_ip"], push["to_ip"]) == (found.top_edge["source"], found.top_edge["target"])


def test_the_retrieved_pcap_holds_the_push_almost_one_way(found: Findings, stack: Stack) -> None:
    assert found.pcap is not None and found.pcap.stat().st_size > 0
    assert found.pcap_packets > 1000
    assert found.pcap_payload_c2s > 15 * 2**20  # a minute at ~3 Mbit/s... and more
    assert found.pcap_payload_s2c * 50 < found.pcap_payload_c2s
    import json

    audit = [json.loads(line) for line in (stack.out / "chdb" / "audit.jsonl").read_text().splitlines()]
    pulls = [a for a in audit if a["action"] == "pcap.retrieve"]
    assert pulls[-1]["status"] == 200 and pulls[-1]["bytes"] == found.pcap.stat().st_size  # who/what/when
    assert pulls[-1]["actor"] == "admin" and pulls[-1]["outcome"] == "ok"


def test_backtest_reports_about_every_hour(found: Findings) -> None:
    bt = found.backtest
    assert bt["count"] == 3  # 00:00, 01:00, 02:00
    period = bt["period"]
    assert period is not None
    assert abs(period["period_s"] - 3600) <= 60
    assert period["text"].startswith("every 60 min")
    assert period["next_expected"].startswith("2026-11-20T03:0")


def test_the_conclusion_names_both_ends(found: Findings) -> None:
    assert "db-01" in found.conclusion and "backup-01" in found.conclusion


def test_pcap_matches_the_original_capture(found: Findings, stack: Stack, tmp_path: Path) -> None:
    """The packets retrieved are the original's packets of that minute and filter (tcpdump oracle)."""
    import shutil
    import subprocess

    store = stack.agent_json("/packets/stats")
    assert store["stats"]["dropped_packets"] == 0  # the packet store kept every packet (drops are counted)

    if not shutil.which("tcpdump") or not shutil.which("editcap"):
        pytest.skip("tcpdump/editcap not installed")
    burst = found.bursts[0]["start"].replace("T", " ").replace("Z", "")
    end = burst[:-5] + "01:00" if burst.endswith("00:00") else burst
    window = tmp_path / "window.pcap"
    subprocess.run(["editcap", "-A", burst, "-B", end, str(stack.pcap), str(window)], check=True,
                   capture_output=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})  # fmt: skip
    top = found.top_edge
    flt = vlan_aware(f"host {top['target']} and port {top['server_port']} and host {top['source']}")
    expected = subprocess.run(
        ["tcpdump", "-nr", str(window), flt], capture_output=True, text=True, check=True
    )
    got = subprocess.run(["tcpdump", "-nr", str(found.pcap), flt], capture_output=True, text=True, check=True)
    n_expected = len(expected.stdout.splitlines())
    assert n_expected > 1000
    assert len(got.stdout.splitlines()) == n_expected


def test_request_latency_names_the_slow_sql_and_the_push(found: Findings) -> None:
    """While db-01 pushes its backup, the shop's SQL gets slow: compare by request p99 finds it, drill lists
    the statements, and the conclusion ties both together, all from the CLI's answers."""
    from cloudtap.demo.latency_step import requests_supported

    if not requests_supported():
        pytest.skip("this build's agent or analyses do not handle application requests")
    lat = found.latency
    assert lat.available, lat.reason
    edge = lat.edge
    assert (edge["source_name"], edge["target_name"], edge["server_port"], edge["l7_proto"]) == (
        "shop", "shop", 5432, "pgsql")  # fmt: skip
    assert (
        edge["expected"] < 10 < 40 < edge["value"] < 100
    )  # p99 ~5 ms before, 10-80 ms statements during the push
    assert lat.server["source_name"] == "db-01" == found.top_edge["source_name"]
    assert lat.slowest and all(s["l7_proto"] == "pgsql" for s in lat.slowest)
    assert lat.slowest[0]["stats"]["latency_p99_ms"] > 40 and "?" in lat.slowest[0]["resource"]
    a, b = round(edge["expected"]), round(edge["value"])
    assert (
        f"shop's SQL p99 rose from {a} to {b} ms while db-01 pushed its backup to backup-01"
        in found.conclusion
    )
