"""The agent's control endpoint: over TCP only with a key (the controller's or the key file's), on the Unix
socket without one; ``cloudtap agent status|stop`` use the socket; the exit status of a requested shutdown."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudtap.agent.config import AgentConfig, load_agent_config
from cloudtap.agent.control_socket import UnixControlServer, UnixHTTPConnection
from cloudtap.agent.runner import EXIT_RESTART, Agent
from cloudtap.agent.sinks import MemorySink
from cloudtap.cli.main import app
from cloudtap.errors import ConfigError

ONE_TCP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"
KEY = "k3y-for-the-control-endpoint"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ct-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config(pcap: Path, tmp_path: Path, sockdir: Path, **env: str) -> AgentConfig:
    base = {
        "CLOUDTAP_AGENT__CAPTURE__MODE": "replay", "CLOUDTAP_AGENT__CAPTURE__REPLAY_FILE": str(pcap),
        "CLOUDTAP_AGENT__CAPTURE__REPLAY_STAY": "true", "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(tmp_path / "out"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0", "CLOUDTAP_AGENT__CONTROL__SOCKET": str(sockdir / "agent.sock"),
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false", "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
    }  # fmt: skip
    return load_agent_config(None, env={**base, **env})


def key_file(tmp_path: Path, key: str = KEY) -> Path:
    path = tmp_path / "control.key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def call(url: str, path: str, key: str | None = None, method: str = "GET") -> tuple[int, dict[str, Any], Any]:
    req = urllib.request.Request(url + path, method=method, data=b"" if method == "POST" else None)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def over_socket(path: Path, route: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request(method, route, body=b"" if method == "POST" else None)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_tcp_needs_the_key_the_socket_does_not(shared_pcaps: Path, tmp_path: Path, sockdir: Path) -> None:
    cfg = config(shared_pcaps / ONE_TCP, tmp_path, sockdir, CLOUDTAP_AGENT__CONTROL__KEY_FILE=str(key_file(tmp_path)))
    agent = Agent(cfg, sink=MemorySink())
    agent.start()
    try:
        url = agent.control.url
        assert call(url, "/health")[:2] == (200, {"ok": True})
        code, body, headers = call(url, "/status")
        assert code == 401 and "missing control key" in body["error"] and "Bearer" in headers["WWW-Authenticate"]
        assert call(url, "/status", "wrong-key-of-some-length")[1] == {"error": "wrong control key"}
        for route, method in (("/metrics", "GET"), ("/packets/stats", "GET"), ("/capture/stop", "POST"),
                              ("/shutdown", "POST"), ("/packets/config", "POST")):  # fmt: skip
            assert call(url, route, None, method)[0] == 401, route
        assert "stopped by user" not in agent.status().paused_by  # nothing above reached the agent
        code, body, _ = call(url, "/status", KEY)
        assert code == 200 and body["agent_id"] == agent.agent_id
        sock = sockdir / "agent.sock"
        assert sock.stat().st_mode & 0o777 == 0o600
        assert over_socket(sock, "/status")[0] == 200
        assert over_socket(sock, "/capture/stop", "POST") == (200, {"capturing": False})
        assert "stopped by user" in agent.status().paused_by
        with pytest.raises(OSError, match="another process serves"):
            UnixControlServer(type("H", (), {}), sock)  # type: ignore[arg-type]
        runner = CliRunner()
        shown = runner.invoke(app, ["agent", "status", "--socket", str(sock), "--json"])
        assert shown.exit_code == 0 and json.loads(shown.output)["agent_id"] == agent.agent_id
        started = runner.invoke(app, ["agent", "start", "--url", url, "--key-file", str(tmp_path / "control.key")])
        assert started.exit_code == 0 and json.loads(started.output) == {"capturing": True}
        (tmp_path / "bad.key").write_text("not-the-key-at-all")
        refused = runner.invoke(app, ["agent", "status", "--url", url, "--key-file", str(tmp_path / "bad.key")])
        assert refused.exit_code == 1 and "401" in refused.output and "wrong control key" in refused.output
    finally:
        agent.shutdown()
        agent.run()
    assert not (sockdir / "agent.sock").exists()  # removed at exit
    assert agent.exit_code == 0


def test_a_standalone_agent_without_a_key_file_opens_no_tcp_port(shared_pcaps: Path, tmp_path: Path,
                                                                 sockdir: Path) -> None:  # fmt: skip
    agent = Agent(config(shared_pcaps / ONE_TCP, tmp_path, sockdir), sink=MemorySink())
    agent.start()
    try:
        assert agent.control is None and agent.control_url == f"unix:{sockdir / 'agent.sock'}"
        assert over_socket(sockdir / "agent.sock", "/health")[0] == 200
    finally:
        agent.shutdown()
        agent.run()
    with pytest.raises(ConfigError, match="at least 16"):
        Agent(config(shared_pcaps / ONE_TCP, tmp_path, sockdir,
                     CLOUDTAP_AGENT__CONTROL__KEY_FILE=str(key_file(tmp_path, "short"))), sink=MemorySink())  # fmt: skip


def test_the_controllers_key_works_once_issued_and_rotates(shared_pcaps: Path, tmp_path: Path, sockdir: Path) -> None:
    cfg = config(shared_pcaps / ONE_TCP, tmp_path, sockdir, CLOUDTAP_AGENT__CONTROLLER__URL="http://127.0.0.1:9",
                 CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE=str(tmp_path / "cache.json"),
                 CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE=str(tmp_path / "cred.json"))  # fmt: skip
    agent = Agent(cfg, sink=MemorySink())
    agent.start()
    try:
        url = agent.control.url
        assert "no control key yet" in call(url, "/status", "anything-at-all-here")[1]["error"]
        assert agent.credentials is not None
        agent.credentials.save({"agent_id": "ag-1", "credential": "cta_ag-1_x", "control_key": "first-key-0123456789"})
        assert call(url, "/status", "first-key-0123456789")[0] == 200
        agent.credentials.save({"agent_id": "ag-1", "credential": "cta_ag-1_y", "control_key": "second-key-012345678"})
        assert call(url, "/status", "first-key-0123456789")[0] == 401
        assert call(url, "/status", "second-key-012345678")[0] == 200
        assert (tmp_path / "cred.json").stat().st_mode & 0o777 == 0o600
    finally:
        agent.shutdown()
        agent.run()


def test_a_requested_shutdown_exits_for_a_restart(shared_pcaps: Path, tmp_path: Path, sockdir: Path) -> None:
    agent = Agent(config(shared_pcaps / ONE_TCP, tmp_path, sockdir), sink=MemorySink())
    agent.start()
    assert over_socket(sockdir / "agent.sock", "/shutdown", "POST") == (200, {"shutdown": True, "exit_status": 75})
    agent.run()  # returns: the shutdown stopped it
    assert agent.exit_code == EXIT_RESTART
