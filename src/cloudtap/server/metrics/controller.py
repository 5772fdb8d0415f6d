"""Controller metrics: agents by state, heartbeat lag, commands (issued, delivered, completed, latency).

Read from ``app.state.controller`` (never built here: zeros until the controller exists). Agent ids never
become labels: agents are counted by state, and their heartbeat lag is a gauge histogram over the fleet.
Commands are swept from the controller's queue at each scrape and counted once each (the queue keeps the
last ~1000 completed commands, far more than a scrape interval sees).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeHistogramMetricFamily, Metric

from cloudtap.server.metrics.base import AppCollector, add_distribution, counter, gauge, histogram
from cloudtap.server.metrics.distribution import LATENCY_BUCKETS, Distribution

P = "cloudtap_server_controller_"
#: registered (no heartbeat yet), capturing, paused (by a guard), idle (capture stopped), stale (silent too long)
STATES = ("registered", "capturing", "paused", "idle", "stale")
LAG_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def agent_state(fleet: Any, heartbeats: Any, agent: Any, now: float) -> str:
    """One of :data:`STATES` for ``agent``."""
    if fleet.is_stale(agent, now):
        return "stale"
    latest = heartbeats.latest(agent.id)
    if latest is None:
        return "registered"
    if latest.report.capturing:
        return "capturing"
    return "paused" if latest.report.paused_by else "idle"


class CommandTally:
    """Counts each command of a queue once as it is delivered and completed (swept at scrape time)."""

    def __init__(self) -> None:
        self.queue_id: int | None = None
        self._reset()

    def _reset(self) -> None:
        self.issued = 0
        self.completed: dict[tuple[str, str], int] = {}
        self.delivery = Distribution(LATENCY_BUCKETS)
        self.latency = Distribution(LATENCY_BUCKETS)
        self._delivered: set[int] = set()
        self._done: set[int] = set()
        self.pending = 0

    def sweep(self, queue: Any, now: float) -> None:
        """Count what changed in ``queue`` since the last sweep (a new queue starts the counts again)."""
        if id(queue) != self.queue_id:
            self._reset()
            self.queue_id = id(queue)
        commands = _commands(queue)
        ids = {c.id for c in commands}
        self.issued = max([self.issued, *ids])
        self.pending = sum(1 for c in commands if c.delivered_at is None and now - c.issued_at < queue.ttl_s)
        for c in commands:
            if c.delivered_at is not None and c.id not in self._delivered:
                self._delivered.add(c.id)
                self.delivery.observe(max(0.0, c.delivered_at - c.issued_at))
            if c.done_at is not None and c.id not in self._done:
                self._done.add(c.id)
                self.latency.observe(max(0.0, c.done_at - c.issued_at))
                key = (c.action, "ok" if c.ok else "failed")
                self.completed[key] = self.completed.get(key, 0) + 1
        self._delivered &= ids  # forget what the queue pruned: it cannot come back
        self._done &= ids


def _commands(queue: Any) -> list[Any]:
    """Every command the queue still keeps."""
    return list(queue.snapshot())


class ControllerCollector(AppCollector):
    """``cloudtap_server_controller_*``."""

    name = "controller"

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.tally = CommandTally()

    def families(self) -> Iterator[Metric]:
        ctl = self.state("controller")
        now = time.time()
        agents = ctl.registry.all() if ctl is not None else []
        by_state = dict.fromkeys(STATES, 0)
        lags = []
        for agent in agents:
            by_state[agent_state(ctl.fleet, ctl.heartbeats, agent, now)] += 1
            lags.append(max(0.0, now - agent.last_seen))
        family = gauge(P + "agents", "registered agents by state", labels=["state"])
        for state, n in by_state.items():
            family.add_metric([state], n)
        yield family
        yield _lag_histogram(lags)
        yield gauge(P + "heartbeat_lag_max_seconds", "seconds since the most silent agent was last heard",
                    max(lags, default=0.0))  # fmt: skip
        yield from self._commands(ctl, now)
        last = getattr(ctl, "last_sync", None) or {}
        yield gauge(P + "last_sync_timestamp_seconds", "when policies were last compiled against the inventory",
                    last.get("at", 0))  # fmt: skip
        yield gauge(P + "last_sync_seconds", "how long the last policy compilation took", last.get("seconds", 0))
        yield from _broker(ctl, agents)

    def _commands(self, ctl: Any, now: float) -> Iterator[Metric]:
        tally = self.tally
        if ctl is not None:
            tally.sweep(ctl.commands, now)
        yield counter(P + "commands_issued", "commands queued for agents", tally.issued)
        done = counter(P + "commands_completed", "commands an agent reported a result for", labels=["action", "result"])
        for (action, result), n in sorted(tally.completed.items()):
            done.add_metric([action, result], n)
        yield done
        yield gauge(P + "commands_pending", "commands queued and not yet delivered", tally.pending)
        delivery = histogram(P + "command_delivery_seconds", "from a command queued to its agent's long-poll taking it")
        add_distribution(delivery, [], tally.delivery)
        yield delivery
        latency = histogram(P + "command_seconds", "from a command queued to its agent reporting the result")
        add_distribution(latency, [], tally.latency)
        yield latency


def _broker(ctl: Any, agents: list[Any]) -> Iterator[Metric]:
    """The agents' packet brokers, summed over the fleet (each agent's latest heartbeat; no agent labels)."""
    latest = [ctl.heartbeats.latest(a.id) for a in agents] if ctl is not None else []
    reports = [h.report for h in latest if h is not None]
    yield gauge(P + "agents_forwarded_bytes", "bytes the agents' brokers forwarded, summed over their latest "
                "heartbeats (each counted since its agent started)", sum(r.forwarded_bytes for r in reports))  # fmt: skip
    yield gauge(P + "agents_forward_drops", "copies the agents' brokers dropped (cap, fuse, send errors), summed "
                "over their latest heartbeats", sum(r.forward_drops for r in reports))  # fmt: skip
    yield gauge(P + "agents_broker_fuse_open", "agents whose host fuse has paused distribution",
                sum(1 for r in reports if r.broker_fuse_open))  # fmt: skip


def _lag_histogram(lags: list[float]) -> Metric:
    family = GaugeHistogramMetricFamily(
        P + "heartbeat_lag_seconds", "agents by seconds since their last heartbeat (or registration)"
    )
    buckets = [(repr(b), float(sum(1 for x in lags if x <= b))) for b in LAG_BUCKETS]
    family.add_metric([], [*buckets, ("+Inf", float(len(lags)))], sum(lags))
    return family
