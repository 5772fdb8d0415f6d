"""Learning the inventory from agents, when no cloud API is configured.

Each agent reports its host, the VM ports it sees (host-side device name, guest MAC, libvirt domain and
uuid, the IPs seen as the VM's own on that port) and the VMs behind them with what nova wrote in their
domain XML (instance name, project id and name, flavor, owner user). That becomes a snapshot of source
``agents``: one host per agent host name; one project per nova project (key: its id); one VM per libvirt
domain (key: the domain uuid, which nova makes the instance id, else the domain name; name: the nova
instance name, else the domain name); one interface per MAC (key = MAC) with the IPs seen.
Do not combine with a platform connector: compare them instead (:mod:`cloudtap.inventory.disagreements`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cloudtap.errors import ConfigError
from cloudtap.inventory.addresses import canonical_ip, canonical_mac
from cloudtap.inventory.model import VM, Host, Interface, Project, Snapshot

NAME = "agents"


def _ip_text(entry: Any) -> str:
    return str(entry.get("ip") if isinstance(entry, Mapping) else entry)


def _vm_of(domain: str, identity: Mapping[str, Any], host: str) -> tuple[VM, Project | None]:
    """The VM of a libvirt domain (and its nova project) from the report's ``vms`` entry (maybe empty)."""
    key = str(identity.get("uuid") or "").lower() or domain
    project_id = str(identity.get("project_id") or "")
    project_name = str(identity.get("project_name") or "")
    project = Project(key=project_id or project_name, name=project_name or project_id) if project_id or project_name else None
    tags = tuple(f"{k}={identity[k]}" for k in ("flavor", "user_name") if identity.get(k))
    vm = VM(key=key, name=str(identity.get("name") or "") or domain, project=project.key if project else "", host=host,
            state="running", tags=tags)  # fmt: skip
    return vm, project


def snapshot_from_agents(reports: Iterable[Mapping[str, Any]], taken_at: int | None = None) -> Snapshot:
    """Build the ``agents`` snapshot from agent reports.

    Args:
        reports: ``{agent_id, host, address?, interfaces: [{name, mac, domain, uuid?, ips?}], vms?: [{domain,
            uuid, name, project_id, project_name, flavor, user_id, user_name}]}`` each (``ips``: texts or
            ``{ip, first_seen_ns, last_seen_ns}``); later reports win when two name the same VM or MAC (a VM
            that just migrated).
        taken_at: ns since the epoch (default: now).

    Raises:
        ConfigError: a report without ``host``, or with a malformed MAC or IP (naming the agent).
    """
    hosts: dict[str, Host] = {}
    projects: dict[str, Project] = {}
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
        identities = {str(v.get("domain") or ""): v for v in rep.get("vms") or ()}
        vm_keys: dict[str, str] = {}  # domain -> VM key
        for i, nic in enumerate(rep.get("interfaces") or []):
            try:
                mac = canonical_mac(str(nic.get("mac") or ""))
                ips = tuple(dict.fromkeys(canonical_ip(_ip_text(ip)) for ip in nic.get("ips") or ()))
            except ValueError as exc:
                raise ConfigError(f"agent {agent}: interfaces.{i}: {exc}") from None
            domain = str(nic.get("domain") or "")
            if domain and domain not in vm_keys:
                identity = identities.get(domain) or {"uuid": nic.get("uuid") or ""}
                vm, project = _vm_of(domain, identity, host)
                vms[vm.key] = vm
                vm_keys[domain] = vm.key
                if project is not None:
                    projects[project.key] = project
            ifaces[mac] = Interface(key=mac, mac=mac, ips=ips, vm=vm_keys.get(domain, ""),
                                    device=str(nic.get("name") or ""))  # fmt: skip
    return Snapshot(
        source=NAME,
        taken_at=time.time_ns() if taken_at is None else taken_at,
        projects=list(projects.values()),
        hosts=list(hosts.values()),
        vms=list(vms.values()),
        interfaces=list(ifaces.values()),
    )


def seen_addresses(reports: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """``(MAC, IP) -> (first seen, last seen)`` (ns; 0 when the agent did not say) over reports."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for rep in reports:
        for nic in rep.get("interfaces") or ():
            try:
                mac = canonical_mac(str(nic.get("mac") or ""))
            except ValueError:
                continue
            for entry in nic.get("ips") or ():
                if not isinstance(entry, Mapping):
                    continue
                try:
                    ip = canonical_ip(str(entry.get("ip")))
                except ValueError:
                    continue
                first, last = int(entry.get("first_seen_ns") or 0), int(entry.get("last_seen_ns") or 0)
                old = out.get((mac, ip))
                out[(mac, ip)] = (min(old[0], first) if old and old[0] else first, max(old[1], last) if old else last)
    return out


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

    def reports(self) -> list[dict[str, Any]]:
        """Every (recent enough) report, oldest first."""
        now = self.clock()
        with self._lock:
            items = sorted(self._reports.values(), key=lambda item: item[0])
        if self.max_age_s is not None:
            items = [it for it in items if now - it[0] <= self.max_age_s * 1e9]
        return [rep for _, rep in items]

    def fetch(self) -> Snapshot:
        """The snapshot of every (recent enough) report, oldest first so newer ones win."""
        return snapshot_from_agents(self.reports(), taken_at=self.clock())
