"""Learning the inventory from agents, when no cloud API is configured.

Each agent reports its host and the VM interfaces it sees (host-side device name, MAC, libvirt
domain, IPs when it knows them). That becomes a snapshot of source ``agents``: one host per agent
host name, one VM per libvirt domain (key = domain name), one interface per MAC (key = MAC).
Do not combine with a platform connector: the same NIC would appear under two keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cloudtap.errors import ConfigError
from cloudtap.inventory.addresses import canonical_ip, canonical_mac
from cloudtap.inventory.model import VM, Host, Interface, Snapshot

NAME = "agents"


def snapshot_from_agents(reports: Iterable[Mapping[str, Any]], taken_at: int | None = None) -> Snapshot:
    """Build the ``agents`` snapshot from agent reports.

    Args:
        reports: ``{agent_id, host, address?, interfaces: [{name, mac, domain, ips?}]}`` each; later
            reports win when two name the same domain or MAC (a VM that just migrated).
        taken_at: ns since the epoch (default: now).

    Raises:
        ConfigError: a report without ``host``, or with a malformed MAC or IP (naming the agent).
    """
    hosts: dict[str, Host] = {}
    vms: dict[str, VM] = {}
    ifaces: dict[str, Interface] = {}
    for rep in reports:
        agent = str(rep.get("agent_id", "?"))
        host = str(rep.get("host") or "")
        if not host:
            raise ConfigError(f"agent {agent}: report has no 'host'")
        try:
            address = canonical_ip(str(rep["address"])) if rep.get("address") else ""
        except ValueError as exc:
            raise ConfigError(f"agent {agent}: {exc}") from None
        hosts[host] = Host(key=host, name=host, address=address or getattr(hosts.get(host), "address", ""))
        for i, nic in enumerate(rep.get("interfaces") or []):
            try:
                mac = canonical_mac(str(nic.get("mac") or ""))
                ips = tuple(canonical_ip(str(ip)) for ip in nic.get("ips") or ())
            except ValueError as exc:
                raise ConfigError(f"agent {agent}: interfaces.{i}: {exc}") from None
            domain = str(nic.get("domain") or "")
            if domain:
                vms[domain] = VM(key=domain, name=domain, host=host, state="running")
            ifaces[mac] = Interface(key=mac, mac=mac, ips=ips, vm=domain, device=str(nic.get("name") or ""))
    return Snapshot(
        source=NAME,
        taken_at=time.time_ns() if taken_at is None else taken_at,
        hosts=list(hosts.values()),
        vms=list(vms.values()),
        interfaces=list(ifaces.values()),
    )


class AgentsConnector:
    """Holds the latest report of each agent (fed by the controller's heartbeats); ``fetch`` merges them.

    Args:
        max_age_s: reports older than this are left out (their VMs vanish); ``None`` keeps them.
        clock: ns clock (tests).
    """

    name = NAME

    def __init__(self, max_age_s: float | None = None, clock: Any = time.time_ns) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._reports: dict[str, tuple[int, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def update(self, report: Mapping[str, Any]) -> None:
        """Record an agent's report (replaces its previous one)."""
        agent = str(report.get("agent_id") or "")
        if not agent:
            raise ValueError("agent report without 'agent_id'")
        with self._lock:
            self._reports[agent] = (self.clock(), dict(report))

    def forget(self, agent_id: str) -> None:
        """Drop an agent's report (deregistered agent)."""
        with self._lock:
            self._reports.pop(agent_id, None)

    def fetch(self) -> Snapshot:
        """The snapshot of every (recent enough) report, oldest first so newer ones win."""
        now = self.clock()
        with self._lock:
            items = sorted(self._reports.values(), key=lambda item: item[0])
        if self.max_age_s is not None:
            items = [it for it in items if now - it[0] <= self.max_age_s * 1e9]
        return snapshot_from_agents([rep for _, rep in items], taken_at=now)
