"""Helpers for PCAP retrieval tests: replay agents with a packet store, a real HTTP server, references.

An agent's TCP control endpoint needs a key (``control.key_file``): :func:`replay_agent` writes ``key``
(default :data:`AGENT_KEY`) there; targets and direct calls send it as ``Authorization: Bearer``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloudtap.agent.config import load_agent_config
from cloudtap.agent.runner import Agent
from cloudtap.agent.sinks import MemorySink
from uvicorn_thread import serve_in_thread

SNAP = 256
#: The control key of replay agents (at least 16 characters).
AGENT_KEY = "replay-agent-control-key-0123456789"


def synth(path: Path, duration: str = "1m") -> Path:
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    write_pcap(with_overrides(builtin_scenario("small-cloud"), duration=duration), path)
    return path


def tcpdump_split(original: Path, bpf: str, out: Path) -> Path:
    """Frames of ``original`` matching ``bpf``, ns timestamps kept."""
    subprocess.run(["tcpdump", "--time-stamp-precision=nano", "-r", str(original), "-w", str(out), bpf],
                   check=True, capture_output=True)  # fmt: skip
    return out


def window(ts: np.ndarray, wl: np.ndarray, data: list[bytes], lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    keep = (ts >= lo) & (ts < hi)
    order = np.argsort(ts[keep], kind="stable")
    kept = [d[:SNAP] for d, k in zip(data, keep.tolist(), strict=True) if k]
    return ts[keep][order], wl[keep][order], [kept[i] for i in order.tolist()]


def key_header(key: str = AGENT_KEY) -> dict[str, str]:
    """The header a caller of an agent's TCP control endpoint sends."""
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def replay_agent(pcap: Path, directory: Path, agent_id: str, key: str = AGENT_KEY) -> Iterator[Agent]:
    """An agent that replayed ``pcap`` into its packet store; its control endpoint (key ``key``) stays up."""
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "control.key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    env = {
        "CLOUDTAP_AGENT__CONTROL__KEY_FILE": str(key_file),
        "CLOUDTAP_AGENT__CONTROL__SOCKET": str(directory / "agent.sock"),
        "CLOUDTAP_AGENT__AGENT_ID": agent_id,
        "CLOUDTAP_AGENT__CAPTURE__MODE": "replay",
        "CLOUDTAP_AGENT__CAPTURE__REPLAY_FILE": str(pcap),
        "CLOUDTAP_AGENT__OUTPUT__DIRECTORY": str(directory / "out"),
        "CLOUDTAP_AGENT__CONTROL__PORT": "0",
        "CLOUDTAP_AGENT__LIMITS__USE_CGROUP": "false",
        "CLOUDTAP_AGENT__LIMITS__MAX_MEMORY_MIB": "16384",
        "CLOUDTAP_AGENT__PACKETS__ENABLED": "true",
        "CLOUDTAP_AGENT__PACKETS__DIRECTORY": str(directory / "packets"),
        "CLOUDTAP_AGENT__PACKETS__SNAPLEN": str(SNAP),
        "CLOUDTAP_AGENT__PACKETS__BLOCK_KIB": "256",
    }
    agent = Agent(load_agent_config(None, env=env), sink=MemorySink())
    agent.start()
    try:
        deadline = time.monotonic() + 60
        while not all(w.finished.is_set() for w in agent.workers):
            assert time.monotonic() < deadline, "replay did not finish"
            time.sleep(0.02)
        assert agent.packet_store.sync()
        yield agent
    finally:
        agent.shutdown()
        agent._finish()


class _NoStore:
    """create_app needs a store; PCAP retrieval never touches it."""


@dataclass
class Served:
    """A server on a real socket: its URL and its app (to grant users, read ``app.state``)."""

    url: str
    app: Any


@contextmanager
def serve(settings: Any, pcap_targets: Any = None) -> Iterator[Served]:
    """The server API on a real socket (uvicorn in a thread)."""
    from cloudtap.server.api.app import create_app

    app = create_app(settings, _NoStore())  # type: ignore[arg-type]
    if pcap_targets is not None:
        app.state.pcap_targets = pcap_targets
    with serve_in_thread(app, lifespan="off") as url:
        yield Served(url, app)


@contextmanager
def serve_app(settings: Any, pcap_targets: Any = None) -> Iterator[str]:
    """:func:`serve`, yielding only the URL."""
    with serve(settings, pcap_targets) as served:
        yield served.url
