"""A demo stack: synthetic capture + static inventory, a server process and an agent process on loopback.

It runs as a deployment should: the server serves HTTPS with a private CA made for the demo, every
route needs a credential (the first admin's password is written to ``admin-password``), the agent
registers with a bootstrap token and then uses its own credential, and the CLI steps log in first.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudtap.demo.latency_step import requests_supported
from cloudtap.synth import builtin_scenario, write_pcap
from cloudtap.synth.inventory import write_static_inventory
from cloudtap.synth.scenario import Scenario

#: How to run the cloudtap CLI in a child process.
CLI = [sys.executable, "-m", "cloudtap.cli.main"]
AGENT_ID = "collector-01"


@dataclass
class Stack:
    """The running demo: where things are."""

    out: Path
    scenario: Scenario
    pcap: Path
    inventory: Path
    url: str  #: server base URL (https)
    agent_url: str  #: agent control endpoint (needs the control key; the demo uses the Unix socket)
    packets: int  #: frames in the capture
    flows: int  #: connections the scenario made
    replay_s: float = 0.0  #: time the agent took to replay and ship everything
    ca_file: Path = Path()  #: the demo CA that signed the server's certificate
    admin_password: str = ""  #: the first admin's password
    cli_env: dict[str, str] | None = None  #: environment of CLI steps (logged-in credentials, CA)

    @property
    def agent_socket(self) -> Path:
        """The agent's local admin socket."""
        return self.out / "agent.sock"

    def server_json(self, path: str, token: str | None = None) -> Any:
        """GET ``path`` from the server over TLS (verified with the demo CA), as the logged-in admin."""
        return get_json(self.url + path, ca_file=self.ca_file, token=token or _token(self))

    def agent_json(self, path: str) -> Any:
        """GET ``path`` from the agent's control endpoint through its Unix socket."""
        return agent_json(self.agent_socket, path)


def get_json(url: str, timeout_s: float = 30.0, ca_file: Path | None = None, token: str | None = None) -> Any:
    """GET a JSON document (TLS verified against ``ca_file``; ``Authorization: Bearer token``)."""
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout_s, context=context) as resp:  # noqa: S310 - our server
        return json.loads(resp.read())


def agent_json(sock: Path, path: str, timeout_s: float = 10.0) -> Any:
    """GET a JSON document from an agent's Unix control socket."""
    from cloudtap.agent.control_socket import UnixHTTPConnection

    conn = UnixHTTPConnection(sock, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"agent {path}: HTTP {resp.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


def _token(stack: Stack) -> str:
    from cloudtap.cli.credentials import CredentialsFile

    env = stack.cli_env or {}
    saved = CredentialsFile(Path(env["CLOUDTAP_CREDENTIALS"])).get(stack.url)
    if saved is None:
        raise RuntimeError(f"no saved login for {stack.url}")
    return str(saved.token)


def _tls(out: Path) -> tuple[Path, Path, Path]:
    """A private CA and the server's certificate for 127.0.0.1 (made once per working directory)."""
    from cloudtap.tls import make_ca, make_certificate

    tls = out / "tls"
    if not (tls / "ca.pem").exists():
        make_ca(tls, name="cloudtap demo CA")
    if not (tls / "server.pem").exists():
        make_certificate(tls, tls, "server", ["127.0.0.1", "localhost"])
    return tls / "ca.pem", tls / "server.pem", tls / "server-key.pem"


def _secret_file(path: Path) -> str:
    """A random secret in a 0600 file (kept across runs of the same working directory)."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18))
    return path.read_text().strip()


def login(url: str, ca: Path, password_file: Path, credentials: Path) -> dict[str, str]:
    """``cloudtap login`` as the admin; the environment later CLI steps run with."""
    env = {**os.environ, "CLOUDTAP_CREDENTIALS": str(credentials)}
    env.pop("CLOUDTAP_TOKEN", None)
    done = subprocess.run(
        [*CLI, "login", "--server", url, "--user", "admin", "--password-file", str(password_file), "--ca", str(ca),
         "--token-name", "demo"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"cloudtap login failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return {**env, "CLOUDTAP_SERVER": url}


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError(
                f"the {what} exited early (code {proc.returncode}); see {path.parent}/{what}.log"
            )
        time.sleep(0.1)
    raise RuntimeError(f"the {what} did not start within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def demo_stack(
    out: Path,
    scenario: str | Scenario = "seed-case",
    port: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> Iterator[Stack]:
    """Synthesise ``scenario``, start the server and the agent, wait until every record is stored.

    Args:
        out: working directory (capture, chDB data, packet store, spool, logs); cleaned first.
        scenario: a built-in scenario name or a scenario object.
        port: server port (0: any free port).
        progress: ``(stage, done, total)`` callback for the long stages (``synth``, ``replay``).

    Yields:
        The running stack; both processes are stopped when the block ends.
    """
    scn = builtin_scenario(scenario) if isinstance(scenario, str) else scenario
    out = out.resolve()
    for sub in ("chdb", "packets", "spool"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("agent-credential.json", "credentials.yaml", "agent.sock"):
        (out / stale).unlink(missing_ok=True)
    ca, cert, key = _tls(out)
    password_file = out / "admin-password"
    password = _secret_file(password_file)
    bootstrap = secrets.token_urlsafe(24)
    pcap, inventory = out / f"{scn.name}.pcap", out / f"{scn.name}.inventory.yaml"
    made = write_pcap(scn, pcap, progress=(lambda d, t: progress("synth", d, t)) if progress else None)
    write_static_inventory(scn, inventory)

    server_url_file, agent_url_file = out / "server.url", out / "agent.url"
    server_url_file.unlink(missing_ok=True)
    agent_url_file.unlink(missing_ok=True)
    server_env = {
        **os.environ,
        "CLOUDTAP_SERVER__API__STATUS_FILE": str(server_url_file),
        "CLOUDTAP_SERVER__INVENTORY__STATIC_FILE": str(inventory),
        "CLOUDTAP_SERVER__CONTROLLER__TOKEN": bootstrap,
    }
    server = agent = None
    logs = [open(out / "server.log", "wb"), open(out / "agent.log", "wb")]  # noqa: SIM115 - closed below
    try:
        server = subprocess.Popen(
            [*CLI, "server", "run", "--data", str(out / "chdb"), "--port", str(port), "--tls-cert", str(cert),
             "--tls-key", str(key), "--admin-password-file", str(password_file)],
            env=server_env, stdout=logs[0], stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = _wait_for_file(server_url_file, server, "server")
        cli_env = login(url, ca, password_file, out / "credentials.yaml")
        agent_env = {
            **os.environ,
            "SSL_CERT_FILE": str(ca),  # the agent verifies the server against the demo CA
            "CLOUDTAP_AGENT__CONTROLLER__TOKEN": bootstrap,
            "CLOUDTAP_AGENT__CONTROLLER__CREDENTIAL_FILE": str(out / "agent-credential.json"),
            "CLOUDTAP_AGENT__CONTROL__SOCKET": str(out / "agent.sock"),
            "CLOUDTAP_AGENT__AGENT_ID": AGENT_ID,
            "CLOUDTAP_AGENT__OUTPUT__SINK": "server",
            "CLOUDTAP_AGENT__OUTPUT__SERVER_URL": url,
            "CLOUDTAP_AGENT__OUTPUT__SPOOL_DIRECTORY": str(out / "spool"),
            "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
            "CLOUDTAP_AGENT__PACKETS__ENABLED": "true",
            "CLOUDTAP_AGENT__PACKETS__DIRECTORY": str(out / "packets"),
            "CLOUDTAP_AGENT__PACKETS__MAX_DISK_MIB": "4096",
            # a replay at full speed writes far faster than live VMs: let blocks queue for the disk
            "CLOUDTAP_AGENT__PACKETS__MAX_PENDING_MIB": "1024",
            "CLOUDTAP_AGENT__CONTROLLER__URL": url,
            "CLOUDTAP_AGENT__CONTROLLER__HEARTBEAT_S": "1",
            "CLOUDTAP_AGENT__CONTROLLER__CACHE_FILE": str(out / "controller-config.json"),
            "CLOUDTAP_AGENT__CONTROL__STATUS_FILE": str(agent_url_file),
        }
        if requests_supported():  # parse the synthesised application messages, ship them as requests
            agent_env["CLOUDTAP_AGENT__REQUESTS__ENABLED"] = "true"
        started = time.monotonic()
        agent = subprocess.Popen(
            [*CLI, "agent", "run", "--replay", str(pcap), "--stay", "--port", "0"],
            env=agent_env, stdout=logs[1], stderr=subprocess.STDOUT,
        )  # fmt: skip
        agent_url = _wait_for_file(agent_url_file, agent, "agent")
        stack = Stack(out, scn, pcap, inventory, url, agent_url, made.packets, made.flows, ca_file=ca,
                      admin_password=password, cli_env=cli_env)  # fmt: skip
        _wait_until_shipped(stack, agent, progress)
        stack.replay_s = time.monotonic() - started
        yield stack
    finally:
        _stop(agent)
        _stop(server)
        for log in logs:
            log.close()


def _wait_until_shipped(
    stack: Stack, agent: subprocess.Popen[bytes], progress: Callable[[str, int, int], None] | None,
    timeout_s: float = 900.0,
) -> None:  # fmt: skip
    """Until the agent has replayed the file, shipped every batch and registered with the controller."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited (code {agent.returncode}); see {stack.out}/agent.log")
        try:
            status = stack.agent_json("/status")
        except OSError:  # the socket is not there yet
            time.sleep(0.2)
            continue
        if progress:
            progress("replay", int(status["captured_packets"]), stack.packets)
        if status.get("replay_done") and status.get("ship_pending_batches", 0) == 0:
            agents = stack.server_json("/api/v1/agents")
            listed = agents if isinstance(agents, list) else agents.get("agents", [])
            if listed:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the agent did not replay and ship the capture within {timeout_s:.0f} s")
