"""The agent end to end in replay mode: records out equal what the meter finds, control endpoint works."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from agent_replay import ONE_TCP, replay_config

from cloudtap.agent.runner import Agent
from cloudtap.agent.sinks import MemorySink
from cloudtap.meter import meter_file

REPO = Path(__file__).resolve().parents[2]


def test_replay_records_equal_the_meter(shared_pcaps: Path, tmp_path: Path) -> None:
    pcap = shared_pcaps / ONE_TCP
    sink = MemorySink()
    agent = Agent(replay_config(pcap, tmp_path), sink=sink)
    agent.run()
    flows = sink.table("flows")
    assert flows is not None
    expected = meter_file(pcap).to_arrow()
    for column in ("packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c", "retrans_c2s", "rtt_client_us"):
        assert pa.compute.sum(flows[column]).as_py() == pa.compute.sum(expected[column]).as_py(), column
    assert set(flows.column_names) >= {"agent_id", "interface_name", "vm_domain", "client_ip"}
    edges = sink.table("edges_1s")
    assert edges is not None and pa.compute.sum(edges["packets_c2s"]).as_py() == 18
    status = agent.status()
    assert status.captured_packets == 36
    assert status.records == flows.num_rows
    assert status.kernel_drops == 0 and status.meter_drops == 0


def test_synth_replay_wire_reduction(tmp_path: Path) -> None:
    """Records are a small fraction of the packets: the agent ships records, not packets."""
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    scenario = with_overrides(builtin_scenario("small-cloud"), duration="5m")
    synth = write_pcap(scenario, tmp_path / "cloud.pcap")
    cfg = replay_config(synth.path, tmp_path)
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"edge_intervals_s": [60.0]})})
    agent = Agent(cfg)
    agent.run()
    status = agent.status()
    assert status.captured_packets == synth.packets
    files = list((tmp_path / "out" / "flows").glob("*.parquet"))
    assert files
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    assert rows == status.records
    assert status.wire_reduction > 20


def _wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


@pytest.mark.slow
def test_cli_agent_control_and_stop_within_a_second(shared_pcaps: Path, tmp_path: Path) -> None:
    status_file = tmp_path / "url"
    key = "a-control-key-for-this-test"
    (tmp_path / "key").write_text(key)
    sockdir = Path(tempfile.mkdtemp(prefix="ct-", dir="/tmp"))  # Unix socket paths are short
    env = dict(os.environ)
    env.update(
        {
            "CLOUDTAP_AGENT__CONTROL__STATUS_FILE": str(status_file),
            "CLOUDTAP_AGENT__CONTROL__KEY_FILE": str(tmp_path / "key"),
            "CLOUDTAP_AGENT__CONTROL__SOCKET": str(sockdir / "agent.sock"),
            "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        }
    )
    auth = {"Authorization": f"Bearer {key}"}
    pcap = shared_pcaps / ONE_TCP
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudtap.cli.main", "agent", "run", "--replay", str(pcap), "--speed", "0.001",
         "--output", str(tmp_path / "out"), "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _wait_for(status_file)
        get = urllib.request.Request(url + "/status", headers=auth)
        status = json.loads(urllib.request.urlopen(get, timeout=5).read())
        assert status["mode"] == "replay" and status["capturing"]
        metrics = urllib.request.urlopen(urllib.request.Request(url + "/metrics", headers=auth), timeout=5).read()
        assert "cloudtap_agent_captured_packets_total" in metrics.decode()
        stop = urllib.request.Request(url + "/capture/stop", method="POST", data=b"", headers=auth)
        assert json.loads(urllib.request.urlopen(stop, timeout=5).read()) == {"capturing": False}
        time.sleep(0.3)
        shown = subprocess.run([sys.executable, "-m", "cloudtap.cli.main", "agent", "status", "--json", "--socket",
                                str(sockdir / "agent.sock")], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert shown.returncode == 0 and not json.loads(shown.stdout)["capturing"], shown.stderr
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        assert time.monotonic() - started < 1.0
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_missing_capture_permission_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import cloudtap.cli.agent_cmd as agent_cmd
    from cloudtap.cli.main import app

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(agent_cmd.socket, "socket", refuse)
    result = CliRunner().invoke(app, ["agent", "run"])
    assert result.exit_code == 1
    assert "CAP_NET_RAW" in result.output


def test_memory_grant_too_small_is_a_config_error(tmp_path: Path) -> None:
    from cloudtap.errors import ConfigError

    cfg = replay_config(Path("/dev/null"), tmp_path)
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(update={"max_memory_mib": 100})})
    with pytest.raises(ConfigError, match="MiB"):
        Agent(cfg, sink=MemorySink())

