"""`cloudtap pcap` through the server: progress, the caller's login in the audit log, 413 exit code, --agent."""

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
from auth_server import settings_for, token_of  # noqa: E402
from pcap_env import AGENT_KEY, replay_agent, serve, synth, window  # noqa: E402

from access_helpers import grant  # noqa: E402
from capture_frames import frames_of  # noqa: E402
from cloudtap.cli.errors import CliError  # noqa: E402
from cloudtap.cli.main import app  # noqa: E402
from cloudtap.cli.pcap_cmd import parse_agent  # noqa: E402
from cloudtap.server.audit import audit_of  # noqa: E402
from cloudtap.server.pcap import StaticTargets, Target  # noqa: E402


class _Targets(StaticTargets):
    """VM -> targets, and registered agents by id (what the controller resolves in production)."""

    def __init__(self, table: dict[str, list[Target]], agents: dict[str, Target]) -> None:
        super().__init__(table)
        self.agents = agents

    def targets_for_agents(self, specs: list[Any], interfaces: tuple[str, ...] = ()) -> list[Target]:
        out = []
        for spec in specs:  # (agent, interfaces) pairs, or agent ids with shared interfaces
            agent, ifaces = spec if isinstance(spec, tuple) else (spec, tuple(interfaces))
            known = self.agents[agent]
            out.append(Target(known.url, tuple(ifaces), agent, key=known.key))
        return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pcapcli")
    original = synth(tmp / "cloud.pcap", duration="30s")
    with replay_agent(original, tmp / "agent", "hv-1") as agent:
        target = Target(agent.control.url, key=AGENT_KEY)
        settings = settings_for(tmp, pcap={"spool_directory": str(tmp / "spool")})
        with serve(settings, _Targets({"db-01": [target]}, {"hv-1": target})) as served:
            idx = agent.packet_store.index()
            yield {"tmp": tmp, "original": original, "agent": agent, "url": served.url, "app": served.app,
                   "carol": token_of(grant(served.app, "operator", name="carol")),
                   "lo": int(idx["min_ts"].min()), "hi": int(idx["max_ts"].max()) + 1}  # fmt: skip


def pcap(env: dict[str, Any], *args: str, token: str | None = None) -> Any:
    extra = ["--token", token] if token else []
    return CliRunner().invoke(app, ["pcap", "--server", env["url"], *extra, *args])


def test_pcap_vm_through_server(env: dict[str, Any]) -> None:
    out = env["tmp"] / "incident.pcapng"
    lo, hi = env["lo"], (env["lo"] + env["hi"]) // 2
    res = pcap(env, "--vm", "db-01", "--from", str(lo), "--to", str(hi), "--filter", "vlan and udp", "-o", str(out),
               token=env["carol"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "packets" in res.output
    subprocess.run(["tshark", "-r", str(out), "-c", "1"], check=True, capture_output=True)
    ref = env["tmp"] / "ref.pcap"
    subprocess.run(["tcpdump", "--time-stamp-precision=nano", "-r", str(env["original"]), "-w", str(ref), "vlan and udp"],
                   check=True, capture_output=True)  # fmt: skip
    ts, _, data = frames_of(out)
    rts, _, rdata = window(*frames_of(ref), lo, hi)
    assert len(ts) > 50 and np.array_equal(ts, rts) and data == rdata
    record = audit_of(env["app"]).read(action="pcap.retrieve")[-1]
    assert record["actor"] == "carol" and record["vm"] == "db-01" and record["outcome"] == "ok"


def test_pcap_needs_a_login_and_the_permission(env: dict[str, Any]) -> None:
    out = env["tmp"] / "denied.pcapng"
    args = ("--vm", "db-01", "--from", str(env["lo"]), "--to", str(env["hi"]), "-q", "-o", str(out))
    anonymous = pcap(env, *args)
    assert anonymous.exit_code == 1 and "cloudtap login" in anonymous.output
    viewer = pcap(env, *args, token=token_of(grant(env["app"], "viewer")))
    assert viewer.exit_code == 1 and "permission denied" in viewer.output and "pcap:read" in viewer.output
    assert not out.exists() and not out.with_name(out.name + ".part").exists()


def test_pcap_too_large_exits_3(env: dict[str, Any]) -> None:
    out = env["tmp"] / "x.pcapng"
    res = pcap(env, "--vm", "db-01", "--from", str(env["lo"]), "--to", str(env["hi"]), "--max-bytes", "5000",
               "-o", str(out), token=env["carol"])  # fmt: skip
    assert res.exit_code == 3 and "413" in res.output
    assert not out.exists()


def test_pcap_by_registered_agent(env: dict[str, Any]) -> None:
    out = env["tmp"] / "agent.pcapng"
    res = pcap(env, "--agent", "hv-1:cloud.pcap", "-q", "--from", str(env["lo"]), "--to", str(env["hi"]),
               "-o", str(out), token=env["carol"])  # fmt: skip
    assert res.exit_code == 0, res.output
    ts, _, _ = frames_of(out)
    assert len(ts) == env["agent"].packet_store.stats.packets_written
    assert bool(np.all(np.diff(ts) >= 0))
    assert audit_of(env["app"]).read(action="pcap.retrieve")[-1]["agents"] == ["hv-1"]


def test_agent_option_takes_ids_not_urls() -> None:
    assert parse_agent("hv-1") == {"agent": "hv-1", "interfaces": []}
    assert parse_agent("hv-1:tap0,vnet*") == {"agent": "hv-1", "interfaces": ["tap0", "vnet*"]}
    with pytest.raises(CliError, match="not a URL"):
        parse_agent("http://10.0.0.7:9477")
    res = CliRunner().invoke(
        app, ["pcap", "--from", "-1h", "-o", "x.pcapng", "--server", "http://127.0.0.1:9"]
    )
    assert res.exit_code == 2 and "give --vm or at least one --agent" in res.output
