"""Heartbeat reports: what an agent sends, and a short history of them for "last minute / last hour" tops."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

#: bounds that keep every figure storable (SQLite INTEGER) and the fleet's sums and rates finite in JSON
Count = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Figure = Annotated[float, Field(ge=-1e15, le=1e15)]


class VmInterface(BaseModel):
    """One interface the agent sees (a VM's tap/vnet device, or a capture interface)."""

    name: str
    mac: str | None = None  #: the VM's MAC behind it (libvirt domain XML)
    domain: str | None = None  #: libvirt domain
    packets: Count = 0
    kernel_drops: Count = 0


class HeartbeatReport(BaseModel):
    """The status an agent sends every ``heartbeat_s`` (cumulative counters since the agent started)."""

    model_config = ConfigDict(allow_inf_nan=False)  # the answers are JSON: NaN/Infinity could not be sent back

    version: str = ""
    mode: str = ""
    uptime_s: Figure = 0.0
    capturing: bool = False
    paused_by: list[str] = Field(default_factory=list)
    breaker_trips: Count = 0
    breaker_tripped: bool = False
    cpu_percent: Figure = 0.0
    rss_bytes: Count = 0
    load1: Figure = 0.0
    cores: Count = 0
    captured_packets: Count = 0
    captured_bytes: Count = 0
    record_bytes: Count = 0
    records: Count = 0
    kernel_drops: Count = 0
    meter_drops: Count = 0
    pps_limit_drops: Count = 0
    interfaces: list[VmInterface] = Field(default_factory=list)
    config_version: Count = 0  #: config version the agent runs
    restart_required: list[str] = Field(default_factory=list)  #: keys received that need a restart
    config_error: str = ""
    ship_pending_batches: Count = 0
    errors: list[str] = Field(default_factory=list)
    control_url: str = ""  #: where the server reaches the agent's control endpoint (PCAP retrieval)


@dataclass(frozen=True, slots=True)
class Sample:
    """One heartbeat reduced to what the tops need."""

    t: float
    cpu: float
    rss: int
    load1: float
    packets: int
    bytes: int
    record_bytes: int
    drops: int

    @staticmethod
    def of(t: float, r: HeartbeatReport) -> Sample:
        return Sample(t, r.cpu_percent, r.rss_bytes, r.load1, r.captured_packets, r.captured_bytes, r.record_bytes,
                      r.kernel_drops + r.meter_drops + r.pps_limit_drops)  # fmt: skip


class History:
    """Per-agent samples: every sample of the last ``fine_s``; one per ``coarse_step_s`` up to ``keep_s``."""

    def __init__(self, fine_s: float = 120.0, coarse_step_s: float = 10.0, keep_s: float = 3700.0) -> None:
        self.fine_s, self.coarse_step_s, self.keep_s = fine_s, coarse_step_s, keep_s
        self._fine: dict[str, deque[Sample]] = {}
        self._coarse: dict[str, deque[Sample]] = {}
        self._lock = threading.Lock()

    def add(self, agent_id: str, sample: Sample) -> None:
        """Record one sample."""
        with self._lock:
            fine = self._fine.setdefault(agent_id, deque())
            fine.append(sample)
            while fine and fine[0].t < sample.t - self.fine_s:
                fine.popleft()
            coarse = self._coarse.setdefault(agent_id, deque())
            if not coarse or sample.t - coarse[-1].t >= self.coarse_step_s:
                coarse.append(sample)
            while coarse and coarse[0].t < sample.t - self.keep_s:
                coarse.popleft()

    def window(self, agent_id: str, since: float) -> list[Sample]:
        """Samples at or after ``since`` (oldest first), plus the last one before it as the baseline."""
        with self._lock:
            fine = list(self._fine.get(agent_id, ()))
            coarse = list(self._coarse.get(agent_id, ()))
        merged = [s for s in coarse if not fine or s.t < fine[0].t] + fine
        inside = [s for s in merged if s.t >= since]
        before = [s for s in merged if s.t < since]
        return ([before[-1]] if before else []) + inside

    def forget(self, agent_id: str) -> None:
        with self._lock:
            self._fine.pop(agent_id, None)
            self._coarse.pop(agent_id, None)


def rates(samples: list[Sample]) -> dict[str, Any]:
    """Averages and counter rates over ``samples`` (counters that went down mean a restart: counted from 0)."""
    if not samples:
        return {"cpu": 0.0, "memory": 0, "load": 0.0, "pps": 0.0, "bps": 0.0, "shipped_bps": 0.0, "drops": 0}
    last = samples[-1]
    cpu = sum(s.cpu for s in samples) / len(samples)
    load = sum(s.load1 for s in samples) / len(samples)
    memory = max(s.rss for s in samples)
    d_packets = d_bytes = d_rec = d_drops = 0
    for a, b in zip(samples, samples[1:], strict=False):
        d_packets += _delta(a.packets, b.packets)
        d_bytes += _delta(a.bytes, b.bytes)
        d_rec += _delta(a.record_bytes, b.record_bytes)
        d_drops += _delta(a.drops, b.drops)
    span = last.t - samples[0].t
    if span <= 0:
        return {"cpu": cpu, "memory": memory, "load": load, "pps": 0.0, "bps": 0.0, "shipped_bps": 0.0, "drops": 0}
    return {"cpu": cpu, "memory": memory, "load": load, "pps": d_packets / span, "bps": 8 * d_bytes / span,
            "shipped_bps": 8 * d_rec / span, "drops": d_drops}  # fmt: skip


def _delta(a: int, b: int) -> int:
    return b - a if b >= a else b
