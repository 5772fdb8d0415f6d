"""The workflow's request step: which service got slower in the incident window, on which server, and
which statements, from the application requests the agent parsed (docs/requests.md).

It runs the same CLI as the other steps (``compare --metric latency_p99``, ``drill --metric``). When
the agent, the store or the analyses cannot answer request metrics yet, it says "not available" and
the walk goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtap.demo.workflow import Walker

#: How the conclusion names a protocol's requests.
PROTOCOL_WORDS = {"pgsql": "SQL", "mysql": "SQL", "http": "HTTP", "redis": "Redis", "dns": "DNS"}


def requests_supported() -> bool:
    """True when this build's agent can parse requests and its analyses rank by request latency."""
    try:
        from cloudtap.agent.config import AgentConfig
        from cloudtap.server.analyse.metrics import REQUEST_METRICS
    except ImportError:
        return False
    return "requests" in AgentConfig.model_fields and "latency_p99" in REQUEST_METRICS


@dataclass
class LatencyFindings:
    """What the request step found (``available`` False: the reason is in ``reason``)."""

    available: bool = False
    reason: str = ""
    edge: dict[str, Any] = field(default_factory=dict)  #: project level: the edge whose p99 rose most
    server: dict[str, Any] = field(
        default_factory=dict
    )  #: VM level: that service's server whose p99 rose most
    slowest: list[dict[str, Any]] = field(default_factory=list)  #: the server's slowest statements / paths
    sentence: str = ""  #: the conclusion's sentence about it


def _unavailable(w: Walker, found: LatencyFindings, why: str) -> LatencyFindings:
    found.reason = why.strip().splitlines()[-1][:200] if why.strip() else "no answer"
    w.say(f"request latency: not available ({found.reason})")
    return found


def latency_step(w: Walker, window: tuple[str, str], push: dict[str, Any]) -> LatencyFindings:
    """Compare request p99 in ``window`` with the span before, find the slow server, list its statements.

    Args:
        w: the walker (CLI runner) of the workflow.
        window: the incident window (ISO start, end).
        push: the bulk push found by the byte compare (its ``source_name`` / ``target_name``).
    """
    found = LatencyFindings()
    span = ["--from", window[0], "--to", window[1], "--baseline", "before", "--metric", "latency_p99"]
    try:
        cmp = w.run("2b. Did a service get slower? Request p99 by project edge, same windows",
                    ["compare", *span, "--level", "project", "--limit", "5"])  # fmt: skip
    except RuntimeError as err:
        return _unavailable(w, found, str(err))
    rising = [
        e for e in cmp.get("edges", []) if e.get("abs_change", 0) > 0 and e.get("server_port") is not None
    ]
    if not rising:
        return _unavailable(w, found, "no requests stored for the window")
    edge = found.edge = rising[0]
    w.say(f"slower: {edge['source_name']} → {edge['target_name']} :{edge['server_port']} {edge.get('l7_proto') or ''}, "
          f"p99 {edge['expected']:,.1f} → {edge['value']:,.1f} ms")  # fmt: skip
    try:
        by_vm = w.run(f"2c. Which server? Request p99 of {edge['target_name']}'s servers on port {edge['server_port']}",
                      ["compare", *span, "--level", "vm", "--project", str(edge["target_name"]),
                       "--port", str(edge["server_port"]), "--limit", "5"])  # fmt: skip
        servers = [p for p in by_vm.get("endpoints", []) if p.get("abs_change", 0) > 0]
        if not servers:
            return _unavailable(w, found, "no server of that edge got slower")
        server = found.server = servers[0]
        name = server.get("source_name") or server["source"]
        w.say(f"its server {name}: p99 {server['expected']:,.1f} → {server['value']:,.1f} ms")
        drill = w.run(f"2d. Drill-down: {name}'s slowest statements in the window",
                      ["drill", "--from", window[0], "--to", window[1], "--vm", str(name), "--metric", "latency_p99",
                       "--limit", "5"])  # fmt: skip
    except RuntimeError as err:
        return _unavailable(w, found, str(err))
    found.slowest = [s for s in drill.get("slowest", []) if s.get("role", "server") == "server"]
    if found.slowest:
        s = found.slowest[0]
        w.say(f"slowest: {s['request_type']} {s['resource'][:70]} ({s['stats']['requests']:,} requests, "
              f"p99 {s['stats']['latency_p99_ms'] or 0:,.1f} ms, max {s['stats']['latency_max_ms'] or 0:,.1f} ms)")  # fmt: skip
    found.available = True
    found.sentence = conclusion_sentence(edge, name, push)
    return found


def conclusion_sentence(edge: dict[str, Any], server_name: str, push: dict[str, Any]) -> str:
    """ "<project>'s <protocol> p99 rose from A to B ms while <push source> pushed ... " from the answers."""
    what = PROTOCOL_WORDS.get(str(edge.get("l7_proto") or ""), "request")
    src, dst = push.get("source_name") or push.get("source"), push.get("target_name") or push.get("target")
    where = "over the same host" if src == server_name else f"while {server_name} served it"
    return (f"{edge['target_name']}'s {what} p99 rose from {edge['expected']:,.0f} to {edge['value']:,.0f} ms "
            f"while {src} pushed its backup to {dst} {where}")  # fmt: skip
