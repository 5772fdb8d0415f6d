"""Compile policies against the inventory and the registry: per agent, the interfaces, MACs and BPF to capture.

Which agent covers a VM: the agent whose host name equals the VM's ``Host.name`` (or key), or whose address
equals ``Host.address``. Interfaces come from ``Interface.device`` or from a MAC the agent reports seeing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from cloudtap.inventory.model import VM, Host, Interface, Snapshot
from cloudtap.server.controller.policy import Policy, Selector
from cloudtap.server.controller.registry import AgentRecord


@dataclass
class CompiledPolicy:
    """What one agent must capture (the agent config's ``policy`` section)."""

    active: bool = False
    capture: bool = True
    interfaces: list[str] = field(default_factory=list)
    macs: list[str] = field(default_factory=list)
    bpf: str | None = None
    snaplen: int | None = None
    store_packets: bool = False
    policies: list[str] = field(default_factory=list)
    #: per policy in force: its selection, own filter, snap length and whether requests are parsed; sent only
    #: when a policy keeps payload (agents older than ``policy.filters`` keep working on ``bpf`` otherwise)
    filters: list[dict[str, Any]] = field(default_factory=list)
    vms: list[str] = field(default_factory=list)  #: VM names covered (for people; not sent to the agent)

    def section(self) -> dict[str, Any]:
        """The agent config ``policy`` section."""
        out = {"active": self.active, "capture": self.capture, "interfaces": self.interfaces, "macs": self.macs,
               "bpf": self.bpf, "snaplen": self.snaplen, "store_packets": self.store_packets,
               "policies": self.policies}  # fmt: skip
        if any(f["payload_bytes"] for f in self.filters):
            out["filters"] = self.filters
        return out


@dataclass
class Compilation:
    """The result for every agent, plus which policy won for each VM (key -> policy name)."""

    agents: dict[str, CompiledPolicy]
    vm_policy: dict[str, str]
    agent_of_host: dict[str, str]  #: Host.key -> agent id


class _Index:
    def __init__(self, snap: Snapshot) -> None:
        self.hosts = {h.key: h for h in snap.hosts}
        self.projects = {p.key: p for p in snap.projects}
        self.subnets = {s.key: s for s in snap.subnets}
        self.ifaces: dict[str, list[Interface]] = {}
        for i in snap.interfaces:
            self.ifaces.setdefault(i.vm, []).append(i)


def host_matches_agent(host: Host, agent: AgentRecord) -> bool:
    """True when ``agent`` runs on ``host`` (host name, short host name, or management address)."""
    names = {agent.hostname, agent.hostname.split(".")[0]} - {""}
    if host.name in names or host.key in names or host.name.split(".")[0] in names:
        return True
    return bool(host.address) and host.address == agent.address


def agent_for_host(host: Host, agents: Iterable[AgentRecord]) -> AgentRecord | None:
    """The (most recently seen) agent running on ``host``."""
    found = [a for a in agents if host_matches_agent(host, a)]
    return max(found, key=lambda a: a.last_seen) if found else None


def agents_of_hosts(hosts: Iterable[Host], agents: Iterable[AgentRecord]) -> dict[str, AgentRecord]:
    """Host key -> the agent :func:`agent_for_host` picks, for every host that has one, in one pass over each
    (indexed by name and address: no agents x hosts scan, which a fleet registering at once makes quadratic)."""
    by_name: dict[str, list[AgentRecord]] = {}
    by_address: dict[str, list[AgentRecord]] = {}
    for agent in agents:
        for name in {agent.hostname, agent.hostname.split(".")[0]} - {""}:
            by_name.setdefault(name, []).append(agent)
        if agent.address:
            by_address.setdefault(agent.address, []).append(agent)
    out: dict[str, AgentRecord] = {}
    for host in hosts:
        found = [a for n in {host.name, host.key, host.name.split(".")[0]} for a in by_name.get(n, ())]
        found += by_address.get(host.address, []) if host.address else []
        if found:
            out[host.key] = max(found, key=lambda a: a.last_seen)
    return out


def vms_by_agent(snap: Snapshot, agent_of_host: Mapping[str, str]) -> dict[str, list[VM]]:
    """Agent id -> the VMs on its hosts (``agent_of_host``: host key -> agent id)."""
    out: dict[str, list[VM]] = {}
    for vm in snap.vms:
        agent_id = agent_of_host.get(vm.host)
        if agent_id is not None:
            out.setdefault(agent_id, []).append(vm)
    return out


def selects(sel: Selector, vm: VM, idx: _Index) -> bool:
    """True when every criterion of ``sel`` matches ``vm``."""
    if sel.vm is not None and not fnmatchcase(vm.name, sel.vm):
        return False
    if sel.project is not None:
        proj = idx.projects.get(vm.project)
        names = [vm.project] + ([proj.name] if proj else [])
        if not any(fnmatchcase(n, sel.project) for n in names if n):
            return False
    if sel.host is not None:
        host = idx.hosts.get(vm.host)
        names = [vm.host] + ([host.name] if host else [])
        if not any(fnmatchcase(n, sel.host) for n in names if n):
            return False
    if sel.tag is not None and not any(fnmatchcase(t, sel.tag) for t in vm.tags):
        return False
    if sel.subnet is not None and not _in_subnet(sel.subnet, idx.ifaces.get(vm.key, []), idx):
        return False
    return True


def _in_subnet(spec: str, ifaces: list[Interface], idx: _Index) -> bool:
    try:
        net = ipaddress.ip_network(spec, strict=False)
    except ValueError:
        for i in ifaces:
            sub = idx.subnets.get(i.subnet)
            if i.subnet and (fnmatchcase(i.subnet, spec) or (sub is not None and fnmatchcase(sub.name, spec))):
                return True
        return False
    for i in ifaces:
        for ip in i.ips:
            try:
                if ipaddress.ip_address(ip) in net:
                    return True
            except ValueError:
                continue
    return False


def compile_policies(
    snap: Snapshot,
    policies: list[Policy],
    agents: list[AgentRecord],
    seen: Mapping[str, Mapping[str, str]] | None = None,
) -> Compilation:
    """Compile ``policies`` for every agent.

    Args:
        snap: the inventory now.
        policies: every policy (disabled ones are ignored).
        agents: the registered agents.
        seen: agent id -> {MAC (lower case) -> interface name} the agent reports.
    Returns:
        Per agent id a :class:`CompiledPolicy` (``active`` False for all when no policy is enabled).
    """
    seen = seen or {}
    idx = _Index(snap)
    enabled = sorted((p for p in policies if p.enabled), key=lambda p: (p.priority, p.name))
    vm_policy: dict[str, str] = {}
    winners: dict[str, Policy] = {}
    for vm in snap.vms:
        for p in enabled:
            if selects(p.select, vm, idx):
                winners[vm.key] = p
                vm_policy[vm.key] = p.name
                break
    agent_of_host = {key: agent.id for key, agent in agents_of_hosts(snap.hosts, agents).items()}
    vms_of = vms_by_agent(snap, agent_of_host) if enabled else {}
    out: dict[str, CompiledPolicy] = {}
    for agent in agents:
        if not enabled:
            out[agent.id] = CompiledPolicy()
            continue
        out[agent.id] = _for_agent(vms_of.get(agent.id, []), winners, idx, seen.get(agent.id, {}))
    return Compilation(out, vm_policy, agent_of_host)


def _for_agent(vms: list[VM], winners: dict[str, Policy], idx: _Index, seen: Mapping[str, str]) -> CompiledPolicy:
    result = CompiledPolicy(active=True)
    clauses: dict[str, list[str]] = {}
    used: dict[str, Policy] = {}
    for vm in sorted(vms, key=lambda v: v.name):
        policy = winners.get(vm.key)
        if policy is None or not policy.action.capture:
            continue
        terms: list[str] = []
        for iface in idx.ifaces.get(vm.key, []):
            mac = iface.mac.lower()
            name = iface.device or seen.get(mac, "")
            if name and name not in result.interfaces:
                result.interfaces.append(name)
            if mac:
                if mac not in result.macs:
                    result.macs.append(mac)
                terms.append(f"ether host {mac}")
            else:
                terms.extend(f"host {ip}" for ip in iface.ips)
        if not terms:
            continue
        result.vms.append(vm.name)
        clauses.setdefault(policy.name, []).extend(terms)
        used[policy.name] = policy
    if not clauses:
        result.capture = False
        return result
    parts = []
    for name, terms in sorted(clauses.items(), key=lambda item: _shifts_offsets(used[item[0]].bpf)):
        sel = " or ".join(terms)
        bpf = used[name].bpf
        parts.append(f"(({sel}) and ({bpf}))" if bpf else f"({sel})")
    result.bpf = parts[0] if len(parts) == 1 else " or ".join(parts)
    result.policies = sorted(used)
    snaplens = [p.action.snaplen for p in used.values() if p.action.snaplen]
    result.snaplen = max(snaplens) if snaplens else None
    result.store_packets = any(p.action.store_packets for p in used.values())
    result.filters = [policy_filter_entry(used[n], " or ".join(terms)) for n, terms in sorted(clauses.items())]
    return result


def policy_filter_entry(policy: Policy, select: str) -> dict[str, Any]:
    """One entry of the agent's ``policy.filters``: what ``policy`` keeps of the VMs ``select`` names.

    ``snaplen`` is the headers budget plus ``payload_bytes`` for a policy that keeps payload (or its own
    ``snaplen`` if larger), the policy's ``snaplen`` otherwise (None: the agent's header-only
    ``capture.snaplen``).
    """
    from cloudtap.capture.policy_filter import payload_snaplen

    action = policy.action
    snaplen = action.snaplen
    if action.payload_bytes:
        snaplen = max(payload_snaplen(action.payload_bytes), action.snaplen or 0)
    return {"policy": policy.name, "select": select, "bpf": policy.bpf, "snaplen": snaplen,
            "requests": action.parses_requests, "payload_bytes": action.payload_bytes}  # fmt: skip


_OFFSET_KEYWORDS = re.compile(r"\b(vlan|mpls|pppoes|geneve)\b")


def _shifts_offsets(bpf: str | None) -> bool:
    """Whether a filter uses a keyword after which libpcap reads every later term at shifted offsets (``vlan``,
    ``mpls``, ``pppoes``, ``geneve``): such a policy's clause goes last, so it cannot shift the clauses of the
    other policies ORed with it on the same agent (docs/controller.md)."""
    return bool(bpf and _OFFSET_KEYWORDS.search(bpf))
