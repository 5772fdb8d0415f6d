"""AgentStatus: one snapshot of everything the agent reports (control endpoint, metrics, heartbeats)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AgentStatus:
    """A snapshot of everything the agent reports (status endpoint, metrics, heartbeat later)."""

    agent_id: str
    mode: str
    capturing: bool
    paused_by: list[str]
    uptime_s: float
    interfaces: dict[str, dict[str, Any]]
    captured_packets: int
    captured_bytes: int
    kernel_drops: int
    filter_drops: int
    duplicates: int
    pps_limit_drops: int
    meter_drops: int
    active_flows: int
    flow_table_capacity: int
    records: int
    record_bytes: int
    wire_reduction: float
    cpu_percent: float
    rss_bytes: int
    load1: float
    breaker_trips: int
    errors: list[str] = field(default_factory=list)
    replay_done: bool = False  #: replay mode: the file has been read and metered to the end
    ship_pending_batches: int = 0  #: batches spooled, not yet acknowledged by the server
    broker: dict[str, Any] = field(default_factory=dict)  #: the packet broker's counters (docs/broker.md)
    ipfix: dict[str, dict[str, Any]] = field(default_factory=dict)  #: per IPFIX collector URL (docs/ipfix.md)
    #: the request parsers' counters summed over workers (``enabled``, ``requests``, ``records``, ``by_status``,
    #: drops: ``table_full``, ``queue_overflow``, ``flow_counts_late``...; docs/requests.md "In the agent")
    requests: dict[str, Any] = field(default_factory=dict)
