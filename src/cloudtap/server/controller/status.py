"""Heartbeat reports: what an agent sends, and a short history of them for "last minute / last hour" tops.

Agents before the VM report send neither ``interfaces[].uuid/ips`` nor ``vms``: both default to empty.
What an agent says about its VMs is bounded so that no agent can make the server keep much: texts are
cut to :data:`MAX_TEXT` characters, lists to :data:`MAX_IPS_PER_PORT` IPs per port and :data:`MAX_VMS` VMs.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

#: bounds that keep every figure storable (SQLite INTEGER) and the fleet's sums and rates finite in JSON
Count = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Figure = Annotated[float, Field(ge=-1e15, le=1e15)]
MAX_TEXT = 255  #: longest name, id or flavor kept from an agent
MAX_IPS_PER_PORT = 64  #: IPs kept per port (agents send at most 16, their most recently seen first)
MAX_VMS = 4096  #: VMs kept per report


def _clip(value: Any) -> Any:
    return value[:MAX_TEXT] if isinstance(value, str) else value


def _head(limit: int) -> Any:
    return BeforeValidator(lambda v: v[:limit] if isinstance(v, list) else v)


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value.strip()))


Text = Annotated[str, BeforeValidator(_clip)]


class SeenIp(BaseModel):
    """An IP the agent saw as a VM port's own address (or was told by an older agent: times 0)."""

    ip: Annotated[str, Field(max_length=64), AfterValidator(_ip)]
    first_seen_ns: Count = 0
    last_seen_ns: Count = 0


def _seen_ip(value: Any) -> Any:
    return {"ip": value} if isinstance(value, str) else value


class VmInterface(BaseModel):
    """One interface the agent sees (a VM's tap/vnet device, or a capture interface)."""

    name: Text
    mac: Text | None = None  #: the VM's MAC behind it (libvirt domain XML)
    domain: Text | None = None  #: libvirt domain
    packets: Count = 0
    kernel_drops: Count = 0
    uuid: Text | None = None  #: libvirt domain uuid (nova: the instance id)
    ips: Annotated[list[Annotated[SeenIp, BeforeValidator(_seen_ip)]], _head(MAX_IPS_PER_PORT)] = Field(
        default_factory=list, description="the VM-side IPs seen on this port, most recently seen first")


class VmIdentity(BaseModel):
    """A libvirt domain behind the agent's interfaces, with what nova wrote in its metadata (``""``: none)."""

    domain: Text
    uuid: Text = ""
    name: Text = ""  #: nova instance name
    project_id: Text = ""
    project_name: Text = ""
    flavor: Text = ""
    user_id: Text = ""
    user_name: Text = ""


class BrokerDestinationFigures(BaseModel):
    """What the agent's broker sent to one destination (cumulative since the agent started)."""

    packets: Count = 0
    bytes: Count = 0
    drops: Count = 0  #: copies dropped by the cap, the fuse or a send error


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
    vms: Annotated[list[VmIdentity], _head(MAX_VMS)] = Field(default_factory=list)  #: domains behind interfaces
    config_version: Count = 0  #: config version the agent runs
    restart_required: list[str] = Field(default_factory=list)  #: keys received that need a restart
    config_error: str = ""
    ship_pending_batches: Count = 0
    ship_dead_letters: Count = 0  #: batches the server refused (4xx), set aside in the spool's dead-letter folder
    ship_retries: Count = 0  #: sends that failed and will be tried again (server down, 5xx, 429)
    ship_last_status: Count = 0  #: HTTP status of the last send (0: none yet, or no answer)
    throttled_s: Figure = 0.0  #: seconds the CPU governor held capture back (``limits.max_cpu_cores``)
    errors: list[str] = Field(default_factory=list)
    control_url: str = ""  #: where the server reaches the agent's control endpoint (PCAP retrieval)
    forwarded_packets: Count = 0  #: packet copies the broker sent, every destination
    forwarded_bytes: Count = 0
    forward_drops: Count = 0  #: copies dropped (cap, fuse, send errors), every destination
    broker_fuse_open: bool = False  #: the host fuse paused distribution
    requests_parsed: Count = 0  #: application requests the parser paired or timed out (docs/requests.md)
    request_drops: Count = 0  #: requests lost by the parser (table full, queue overflow, message limit...)
    request_flow_counts_late: Count = 0  #: requests concluded after their flow's last record
    broker: Annotated[dict[Annotated[str, Field(max_length=64)], BrokerDestinationFigures],
                      Field(max_length=256)] = Field(default_factory=dict)  #: per destination  # fmt: skip


def inventory_report(agent: str, host: str, address: str, report: HeartbeatReport) -> dict[str, Any]:
    """What the inventory learns from one heartbeat (``cloudtap.inventory.connectors.agents``): the VM ports
    (interfaces with a MAC that is one), their IPs and the VMs' identities."""
    from cloudtap.inventory.addresses import canonical_mac

    ports = []
    for i in report.interfaces:
        try:
            mac = canonical_mac(i.mac or "")
        except ValueError:
            continue  # a capture interface (no MAC) or a malformed one: nothing to learn
        ports.append({"name": i.name, "mac": mac, "domain": i.domain or "", "uuid": i.uuid or "",
                      "ips": [ip.model_dump() for ip in i.ips]})  # fmt: skip
    return {"agent_id": agent, "host": host, "address": address, "interfaces": ports,
            "vms": [vm.model_dump() for vm in report.vms]}  # fmt: skip


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
    drops: int  #: every drop: kernel + flow table full + pps cap
    kernel_drops: int = 0
    meter_drops: int = 0
    pps_limit_drops: int = 0
    dead_letters: int = 0
    ship_retries: int = 0
    throttled_s: float = 0.0
    forwarded_bytes: int = 0
    forward_drops: int = 0

    @staticmethod
    def of(t: float, r: HeartbeatReport) -> Sample:
        return Sample(t, r.cpu_percent, r.rss_bytes, r.load1, r.captured_packets, r.captured_bytes, r.record_bytes,
                      r.kernel_drops + r.meter_drops + r.pps_limit_drops, r.kernel_drops, r.meter_drops,
                      r.pps_limit_drops, r.ship_dead_letters, r.ship_retries, r.throttled_s, r.forwarded_bytes,
                      r.forward_drops)  # fmt: skip


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


#: cumulative counters of a sample whose increase over the window ``rates`` reports as is
COUNTERS = ("drops", "kernel_drops", "meter_drops", "pps_limit_drops", "dead_letters", "ship_retries", "throttled_s",
            "forward_drops")  # fmt: skip


def rates(samples: list[Sample]) -> dict[str, Any]:
    """Averages and counter rates over ``samples`` (counters that went down mean a restart: counted from 0).

    ``drops`` sums every drop; ``kernel_drops``, ``meter_drops`` (flow table full), ``pps_limit_drops`` (pps
    cap), ``dead_letters``, ``ship_retries`` and ``throttled_s`` (seconds) are the window's increases.
    """
    zero: dict[str, Any] = {"pps": 0.0, "bps": 0.0, "shipped_bps": 0.0, "forwarded_bps": 0.0,
                            **{k: 0 for k in COUNTERS}, "throttled_s": 0.0}  # fmt: skip
    if not samples:
        return {"cpu": 0.0, "memory": 0, "load": 0.0, **zero}
    last = samples[-1]
    cpu = sum(s.cpu for s in samples) / len(samples)
    load = sum(s.load1 for s in samples) / len(samples)
    memory = max(s.rss for s in samples)
    span = last.t - samples[0].t
    if span <= 0:
        return {"cpu": cpu, "memory": memory, "load": load, **zero}
    d_packets = d_bytes = d_rec = d_fwd = 0
    counted: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    for a, b in zip(samples, samples[1:], strict=False):
        d_packets += _delta(a.packets, b.packets)
        d_bytes += _delta(a.bytes, b.bytes)
        d_rec += _delta(a.record_bytes, b.record_bytes)
        d_fwd += _delta(a.forwarded_bytes, b.forwarded_bytes)
        for name in COUNTERS:
            counted[name] += _delta(getattr(a, name), getattr(b, name))
    return {"cpu": cpu, "memory": memory, "load": load, "pps": d_packets / span, "bps": 8 * d_bytes / span,
            "shipped_bps": 8 * d_rec / span, "forwarded_bps": 8 * d_fwd / span, **counted}  # fmt: skip


def _delta(a: float, b: float) -> Any:
    return b - a if b >= a else b
