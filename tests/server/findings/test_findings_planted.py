"""Each planted condition of the synthetic cloud is reported, with the right subject and window."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from findingsdata import MIN, TRUTH, Truth
from findingsrun import Ran
from typer.testing import CliRunner

from cloudtap.cli.main import app
from cloudtap.server.findings.model import Finding

#: A condition is reported with a window starting within this of when it was planted.
WITHIN_S = 2 * MIN


def _epoch(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _matches(f: Finding, t: Truth) -> bool:
    s = f.subject
    if f.kind != t.kind or (t.port is not None and s.server_port != t.port):
        return False
    if t.kind == "lb_imbalance":
        return s.kind == "service" and s.server_project == "shop"
    return s.client_vm == t.client and (not t.server or s.server_vm == t.server)


@pytest.mark.parametrize("truth", TRUTH, ids=[f"{t.kind}:{t.client}->{t.server}:{t.port}" for t in TRUTH])
def test_the_planted_condition_is_reported(planted: Ran, truth: Truth) -> None:
    found = [f for f in planted.engine.findings.find(limit=1000) if _matches(f, truth)]
    assert found, f"{truth} not reported; got {[f.summary for f in planted.engine.findings.find(limit=1000)]}"
    start = planted.data.start_s + int(truth.start_min * MIN)
    end = planted.data.start_s + int(truth.end_min * MIN)
    first = min(found, key=lambda f: _epoch(f.time_from))
    assert start <= _epoch(first.time_from) + MIN and _epoch(first.time_from) <= start + WITHIN_S, first
    assert _epoch(max(f.time_to for f in found)) >= min(end, start + MIN)
    assert all(_epoch(f.time_to) <= end + 5 * MIN for f in found), [f.time_to for f in found]
    assert first.reproduce.startswith("cloudtap ") and first.baseline and first.figures


def test_the_periodic_push_has_its_period_and_next_time(planted: Ran) -> None:
    (f,) = planted.engine.findings.find(kind="periodic_transfer")
    assert abs(f.figures["period_s"] - 300) <= 60
    assert f.figures["direction"] == "c2s" and f.subject.client_vm == "db-01"
    assert f.figures["next_expected"].startswith("2026-11-20T00:30")


def test_the_scan_names_its_targets(planted: Ran) -> None:
    (f,) = planted.engine.findings.find(kind="scan")
    assert f.subject.kind == "source" and f.subject.client_vm == "bastion-01"
    assert f.figures["hosts"] >= 7 and f.figures["ports"] == 100 and f.severity == "critical"


def test_isolation_evidence_has_flows_and_a_pcap_command(planted: Ran) -> None:
    found = planted.engine.findings.find(kind="isolation_crossing")
    crossing = next(f for f in found if f.subject.client_vm == "worker-01")
    assert crossing.severity == "critical" and crossing.figures["rule"] == "no-analytics-shop"
    assert crossing.figures["evidence_flows"], crossing.figures
    assert {r["client"] for r in crossing.figures["evidence_flows"]} == {crossing.subject.client_ip}
    pcap = crossing.figures["pcap"]
    assert pcap.startswith("cloudtap pcap -o ") and crossing.subject.server_ip in pcap
    assert {crossing.subject.client_project, crossing.subject.server_project} == {"analytics", "shop"}


def test_every_reproduce_command_is_a_valid_cli_call(planted: Ran, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Parsed by the real CLI: no server listens, so a valid call exits 1 (unreachable), a bad option 2."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for f in planted.engine.findings.find(limit=1000):
        for command in (f.reproduce, f.figures.get("pcap")):
            if not command:
                continue
            args = shlex.split(command)[1:] + ["--server", "http://127.0.0.1:9"]
            result = runner.invoke(app, args)
            assert result.exit_code == 1, (command, result.output)


def test_an_ongoing_condition_is_one_finding(planted: Ran) -> None:
    (lb,) = planted.engine.findings.find(kind="lb_imbalance")
    assert lb.detections == 30 and lb.figures["top_backend"] == "web-01"
    assert lb.figures["peak_top_share"] >= lb.figures["top_share"] > 0.5
