"""A demo stack: synthetic capture + static inventory, a server process and an agent process on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    url: str  #: server base URL
    agent_url: str  #: agent control endpoint
    packets: int  #: frames in the capture
    flows: int  #: connections the scenario made
    replay_s: float = 0.0  #: time the agent took to replay and ship everything


def get_json(url: str, timeout_s: float = 30.0) -> Any:
    """GET a JSON document."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


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
    }
    server = agent = None
    logs = [open(out / "server.log", "wb"), open(out / "agent.log", "wb")]  # noqa: SIM115 - closed below
    try:
        server = subprocess.Popen(
            [*CLI, "server", "run", "--data", str(out / "chdb"), "--port", str(port)],
            env=server_env, stdout=logs[0], stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = _wait_for_file(server_url_file, server, "server")
        agent_env = {
            **os.environ,
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
        started = time.monotonic()
        agent = subprocess.Popen(
            [*CLI, "agent", "run", "--replay", str(pcap), "--stay", "--port", "0"],
            env=agent_env, stdout=logs[1], stderr=subprocess.STDOUT,
        )  # fmt: skip
        agent_url = _wait_for_file(agent_url_file, agent, "agent")
        stack = Stack(out, scn, pcap, inventory, url, agent_url, made.packets, made.flows)
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
        status = get_json(stack.agent_url + "/status")
        if progress:
            progress("replay", int(status["captured_packets"]), stack.packets)
        if status.get("replay_done") and status.get("ship_pending_batches", 0) == 0:
            agents = get_json(stack.url + "/api/v1/agents")
            listed = agents if isinstance(agents, list) else agents.get("agents", [])
            if listed:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the agent did not replay and ship the capture within {timeout_s:.0f} s")
