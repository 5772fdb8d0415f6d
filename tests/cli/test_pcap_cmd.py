"""`cloudtap pcap`: through the server (progress, audit user, 413 exit code) and --local from an agent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server" / "pcap"))
from pcap_env import replay_agent, serve_app, synth, window  # noqa: E402

from capture_frames import frames_of  # noqa: E402
from cloudtap.cli.main import app  # noqa: E402
from cloudtap.server.pcap import AuditLog, StaticTargets, Target  # noqa: E402
from cloudtap.server.settings import ServerSettings  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pcapcli")
    original = synth(tmp / "cloud.pcap", duration="30s")
    with replay_agent(original, tmp / "agent", "hv-1") as agent:
        settings = ServerSettings.model_validate({"pcap": {"audit_log": str(tmp / "audit.jsonl")}})
        with serve_app(settings, StaticTargets({"db-01": [Target(agent.control.url)]})) as url:
            idx = agent.packet_store.index()
            yield {"tmp": tmp, "original": original, "agent": agent, "url": url,
                   "lo": int(idx["min_ts"].min()), "hi": int(idx["max_ts"].max()) + 1}  # fmt: skip


def test_pcap_vm_through_server(env: dict[str, Any]) -> None:
    out = env["tmp"] / "incident.pcapng"
    lo, hi = env["lo"], (env["lo"] + env["hi"]) // 2
    res = CliRunner().invoke(app, ["pcap", "--vm", "db-01", "--from", str(lo), "--to", str(hi), "--filter", "vlan and udp",
                                   "--server", env["url"], "--user", "carol", "-o", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "packets" in res.output
    subprocess.run(["tshark", "-r", str(out), "-c", "1"], check=True, capture_output=True)
    ref = env["tmp"] / "ref.pcap"
    subprocess.run(["tcpdump", "--time-stamp-precision=nano", "-r", str(env["original"]), "-w", str(ref), "vlan and udp"],
                   check=True, capture_output=True)  # fmt: skip
    ts, _, data = frames_of(out)
    rts, _, rdata = window(*frames_of(ref), lo, hi)
    assert len(ts) > 50 and np.array_equal(ts, rts) and data == rdata
    assert AuditLog(env["tmp"] / "audit.jsonl").read()[-1]["user"] == "carol"


def test_pcap_too_large_exits_3(env: dict[str, Any]) -> None:
    res = CliRunner().invoke(app, ["pcap", "--vm", "db-01", "--from", str(env["lo"]), "--to", str(env["hi"]),
                                   "--max-bytes", "5000", "--server", env["url"], "-o", str(env["tmp"] / "x.pcapng")])  # fmt: skip
    assert res.exit_code == 3 and "413" in res.output
    assert not (env["tmp"] / "x.pcapng").exists()


def test_pcap_local_from_agent(env: dict[str, Any]) -> None:
    out = env["tmp"] / "local.pcapng"
    res = CliRunner().invoke(app, ["pcap", "--agent", env["agent"].control.url + "#cloud.pcap", "--local", "-q",
                                   "--from", str(env["lo"]), "--to", str(env["hi"]), "-o", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    ts, _, _ = frames_of(out)
    assert len(ts) == env["agent"].packet_store.stats.packets_written
    assert bool(np.all(np.diff(ts) >= 0))
