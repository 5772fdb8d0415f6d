"""Server end to end, through real processes on loopback: import, agent shipping, kill -9, outage.

Each test starts ``cloudtap server run`` on its own chDB data directory (chDB allows one process per
path), with authentication on (the first admin's password from a file, a bootstrap token for agents),
and agents as ``cloudtap agent run --replay`` processes with the server sink that register first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloudtap.meter import meter_file

ONE_TCP = "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"
CLI = [sys.executable, "-m", "cloudtap.cli.main"]
ADMIN_PASSWORD = "e2e admin password"
BOOTSTRAP = "e2e-bootstrap-token-0123456789"
_TOKENS: dict[str, str] = {}


def _wait_file(path: Path, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


@contextmanager
def server_process(data: Path, status: Path, port: int = 0) -> Iterator[subprocess.Popen[str]]:
    status.unlink(missing_ok=True)
    password = status.parent / "admin-password"
    password.write_text(ADMIN_PASSWORD)
    env = {**os.environ, "CLOUDTAP_SERVER__API__STATUS_FILE": str(status), "CLOUDTAP_SERVER__CONTROLLER__TOKEN": BOOTSTRAP}
    proc = subprocess.Popen(
        [*CLI, "server", "run", "--data", str(data), "--port", str(port), "--admin-password-file", str(password)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def admin_token(url: str) -> str:
    """An admin API token for the server at ``url`` (the same data directory keeps the same admin)."""
    body = json.dumps({"username": "admin", "password": ADMIN_PASSWORD, "name": "e2e"}).encode()
    req = urllib.request.Request(url + "/api/v1/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["token"])


def get_json(url: str, body: dict | None = None) -> dict:
    base = url.split("/api/", 1)[0]
    if base not in _TOKENS:
        _TOKENS[base] = admin_token(base)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {_TOKENS[base]}"}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def agent_status(tmp_path: Path, name: str) -> dict:
    """The agent's /status through its Unix socket (local admin: no key)."""
    from cloudtap.demo.stack import agent_json

    return agent_json(tmp_path / f"agent-{name}.sock", "/status")  # type: ignore[no-any-return]


def total_packets(url: str) -> int:
    """Sum of flow-record packets stored, over all time."""
    answer = get_json(
        url + "/api/v1/query",
        {"table": "flows", "time_from": "1970-01-01T00:00:00Z", "time_to": "2100-01-01T00:00:00Z",
         "metrics": [{"name": "packets", "agg": "sum"}]},
    )  # fmt: skip
    return int(answer["rows"][0][0] or 0) if answer["rows"] else 0


@pytest.mark.slow
def test_import_through_the_server_equals_the_meter(shared_pcaps: Path, tmp_path: Path) -> None:
    pcap = shared_pcaps / ONE_TCP
    with server_process(tmp_path / "data", tmp_path / "url") as proc:
        url = _wait_file(tmp_path / "url")
        token = admin_token(url)
        refused = subprocess.run([*CLI, "import", str(pcap), "--server", url], capture_output=True, text=True,
                                 timeout=120, env={**os.environ, "CLOUDTAP_CREDENTIALS": str(tmp_path / "none.yaml")})  # fmt: skip
        assert refused.returncode != 0 and ("login" in refused.stderr or "401" in refused.stderr)  # credential needed
        done = subprocess.run(
            [*CLI, "import", str(pcap), "--server", url, "--token", token], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        again = subprocess.run(
            [*CLI, "import", str(pcap), "--server", url, "--token", token], capture_output=True, text=True, timeout=120
        )
        assert again.returncode == 0, again.stderr
        assert total_packets(url) == 36  # imported twice, stored once
        assert proc.poll() is None


def _agent(
    pcap: Path, tmp_path: Path, url: str, name: str, speed: str = "max", stay: bool = False
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "CLOUDTAP_AGENT__AGENT_ID": name,
        "CLOUDTAP_AGENT__OUTPUT__SINK": "server",
        "CLOUDTAP_AGENT__OUTPUT__SERVER_URL": url,
        "CLOUDTAP_AGENT__OUTPUT__SPOOL_DIRECTORY": str(tmp_path / f"spool-{name}"),
        "CLOUDTAP_AGENT__OUTPUT__FLUSH_INTERVAL_S": "0.2",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        # these tests are about shipping: a busy test machine must not trip the load breaker mid-replay
        "CLOUDTAP_AGENT__BREAKERS__MAX_LOAD_PER_CORE": "1000",
        "CLOUDTAP_AGENT__CONTROL__STATUS_FILE": str(tmp_path / f"agent-{name}.url"),
        "CLOUDTAP_AGENT__CONTROL__SOCKET": str(tmp_path / f"agent-{name}.sock"),
        "CLOUDTAP_AGENT__CONTROLLER__URL": url,
        "CLOUDTAP_AGENT__CONTROLLER__TOKEN": BOOTSTRAP,
        "CLOUDTAP_AGENT__CONTROLLER__HEARTBEAT_S": "1",
        "CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE": str(tmp_path / f"controller-{name}.json"),
        "CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE": str(tmp_path / f"credential-{name}.json"),
    }
    return subprocess.Popen(
        [*CLI, "agent", "run", "--replay", str(pcap), "--speed", speed, "--port", "0", *(["--stay"] if stay else [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cloud_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    path = tmp_path_factory.mktemp("cloud") / "cloud.pcap"
    write_pcap(with_overrides(builtin_scenario("small-cloud"), duration="10m"), path)
    return path


@pytest.mark.slow
def test_kill_9_mid_ingest_loses_and_duplicates_nothing(cloud_pcap: Path, tmp_path: Path) -> None:
    expected = meter_file(cloud_pcap)
    want = int(expected.flows["packets_c2s"].sum() + expected.flows["packets_s2c"].sum())
    port = _free_port()
    with server_process(tmp_path / "data", tmp_path / "url", port) as first:
        url = _wait_file(tmp_path / "url")
        agent = _agent(cloud_pcap, tmp_path, url, "kill9", speed="40")  # ~15 s of shipping
        time.sleep(4.0)
        first.send_signal(signal.SIGKILL)  # in the middle of ingest
        first.wait(10)
    time.sleep(2.0)  # the agent spools while the server is gone
    with server_process(tmp_path / "data", tmp_path / "url", port):
        url = _wait_file(tmp_path / "url")
        agent.wait(120)
        assert agent.returncode == 0, agent.stderr.read() if agent.stderr else ""
        deadline = time.monotonic() + 60
        while total_packets(url) < want and time.monotonic() < deadline:
            time.sleep(0.5)
        assert total_packets(url) == want


#: How long the server stays down in the outage test (the issue asks for 2 minutes).
OUTAGE_S = float(os.environ.get("CLOUDTAP_TEST_OUTAGE_S", "120"))


@pytest.mark.slow
def test_server_down_two_minutes_agent_spools_and_loses_nothing(cloud_pcap: Path, tmp_path: Path) -> None:
    """The agent keeps capturing through a 2-minute server outage, spools, and delivers it all once."""
    expected = meter_file(cloud_pcap)
    want = int(expected.flows["packets_c2s"].sum() + expected.flows["packets_s2c"].sum())
    port = _free_port()
    # 10 minutes of traffic at 4x: 150 s of shipping, most of it while the server is down
    with server_process(tmp_path / "data", tmp_path / "url", port) as first:
        url = _wait_file(tmp_path / "url")
        agent = _agent(cloud_pcap, tmp_path, url, "outage", speed="4", stay=True)
        _wait_file(tmp_path / "agent-outage.url")
        time.sleep(5.0)
        before = total_packets(url)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    try:
        down_until = time.monotonic() + OUTAGE_S
        seen_pending = 0
        captured_at_start = agent_status(tmp_path, "outage")["captured_packets"]
        while time.monotonic() < down_until:
            status = agent_status(tmp_path, "outage")
            seen_pending = max(seen_pending, status["ship_pending_batches"])
            time.sleep(1.0)
        status = agent_status(tmp_path, "outage")
        assert status["captured_packets"] > captured_at_start  # it kept capturing through the outage
        assert seen_pending > 0  # ...and spooled what it could not send
        with server_process(tmp_path / "data", tmp_path / "url", port):
            url = _wait_file(tmp_path / "url")
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                status = agent_status(tmp_path, "outage")
                if (
                    status["replay_done"]
                    and status["ship_pending_batches"] == 0
                    and total_packets(url) >= want
                ):
                    break
                time.sleep(1.0)
            assert before < want
            counters = {k: status.get(k) for k in ("captured_packets", "kernel_drops", "meter_drops", "pps_limit_drops",
                                                   "ship_pending_batches", "replay_done", "paused_by", "errors")}  # fmt: skip
            assert total_packets(url) == want, counters  # nothing lost, nothing twice
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_idle_connection_outlives_the_clients_keep_alive(tmp_path: Path) -> None:
    """The server keeps idle connections longer than httpx's 5 s, so a client reusing one is never reset."""
    import http.client

    with server_process(tmp_path / "data", tmp_path / "url"):
        url = _wait_file(tmp_path / "url")
        host, port = url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for attempt in range(2):
            conn.request("GET", "/api/v1/health")
            answer = conn.getresponse()
            assert answer.status == 200 and answer.getheader("connection", "").lower() != "close", attempt
            answer.read()
            if attempt == 0:
                sock = conn.sock
                time.sleep(6.5)  # longer than uvicorn's default keep-alive (5 s)
        assert conn.sock is sock  # the same connection answered both
        conn.close()
