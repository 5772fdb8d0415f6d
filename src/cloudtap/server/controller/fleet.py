"""Fleet monitoring: top agents by CPU/memory/bps/drops over a window, hosts by load, stale agents."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from cloudtap.server.controller.control_url import UrlRefusals
from cloudtap.server.controller.heartbeats import Heartbeats
from cloudtap.server.controller.registry import AgentRecord, Registry
from cloudtap.server.controller.status import rates

METRICS = ("cpu", "memory", "bps", "pps", "shipped_bps", "forwarded_bps", "forward_drops", "drops", "load")
WINDOWS = {"1m": 60.0, "5m": 300.0, "1h": 3600.0}


def window_seconds(window: str) -> float:
    """``1m``/``5m``/``1h`` (or a number of seconds) -> seconds.

    Raises:
        ValueError: an unknown window.
    """
    if window in WINDOWS:
        return WINDOWS[window]
    try:
        value = float(window.strip().removesuffix("s"))
    except ValueError:
        raise ValueError(f"unknown window {window!r}; use one of {list(WINDOWS)} or seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"window must be a finite number of seconds > 0, not {window!r}")
    return value


@dataclass
class Fleet:
    """Reads the registry and the heartbeats."""

    registry: Registry
    heartbeats: Heartbeats
    stale_after: int = 3
    url_refusals: UrlRefusals | None = None

    def is_stale(self, agent: AgentRecord, now: float | None = None) -> bool:
        """No heartbeat for ``stale_after`` periods."""
        now = time.time() if now is None else now
        return now - agent.last_seen > self.stale_after * agent.heartbeat_s

    def row(self, agent: AgentRecord, since: float, now: float) -> dict[str, Any]:
        """One agent's line: identity, liveness and the window's figures."""
        latest = self.heartbeats.latest(agent.id)
        rep = latest.report if latest else None
        figures = rates(self.heartbeats.history.window(agent.id, since))
        refused = self.url_refusals.get(agent.id) if self.url_refusals is not None else None
        return {
            "id": agent.id, "name": agent.name, "host": agent.hostname, "group": agent.group,
            "version": agent.version, "mode": agent.mode,
            "last_seen_s": round(now - agent.last_seen, 3) if agent.last_seen else None,
            "stale": self.is_stale(agent, now), "capturing": bool(rep and rep.capturing),
            "paused_by": rep.paused_by if rep else [], "config_version": agent.config_version,
            "applied_version": rep.config_version if rep else 0,
            "restart_required": rep.restart_required if rep else [],
            "control_url": agent.control_url, "control_url_refused": refused.count if refused else 0,
            "control_url_error": refused.reason if refused else "",
            "broker_fuse_open": bool(rep and rep.broker_fuse_open),
            **figures,
        }  # fmt: skip

    def top(self, by: str = "cpu", window: str = "1m", limit: int = 20) -> list[dict[str, Any]]:
        """Agents sorted by ``by`` over the last ``window``, highest first.

        Raises:
            ValueError: unknown metric or window.
        """
        if by not in METRICS:
            raise ValueError(f"unknown metric {by!r}; use one of {list(METRICS)}")
        now = time.time()
        since = now - window_seconds(window)
        rows = [self.row(a, since, now) for a in self.registry.all()]
        rows.sort(key=lambda r: r[by], reverse=True)
        return rows[:limit]

    def hosts(self, window: str = "1m", limit: int = 50) -> list[dict[str, Any]]:
        """Hosts by load (average 1-min load over the window), with their agents."""
        now = time.time()
        since = now - window_seconds(window)
        by_host: dict[str, dict[str, Any]] = {}
        for agent in self.registry.all():
            r = self.row(agent, since, now)
            latest = self.heartbeats.latest(agent.id)
            h = by_host.setdefault(agent.hostname, {"host": agent.hostname, "address": agent.address, "agents": [],
                                                     "load": 0.0, "cores": 0, "stale": True})  # fmt: skip
            h["agents"].append(agent.name)
            h["load"] = max(h["load"], r["load"])
            h["cores"] = max(h["cores"], latest.report.cores if latest else 0)
            h["stale"] = h["stale"] and r["stale"]
        for h in by_host.values():
            h["load_per_core"] = h["load"] / h["cores"] if h["cores"] else None
        return sorted(by_host.values(), key=lambda h: h["load"], reverse=True)[:limit]

    def stale(self) -> list[dict[str, Any]]:
        """Agents that stopped reporting, longest silent first."""
        now = time.time()
        rows = [self.row(a, now - 60, now) for a in self.registry.all() if self.is_stale(a, now)]
        return sorted(rows, key=lambda r: -(r["last_seen_s"] or 0))
