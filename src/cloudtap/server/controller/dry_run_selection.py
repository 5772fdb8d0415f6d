"""Which VMs, interfaces and MACs a proposed policy would select, per agent (the first half of a dry-run).

A capture (or storage) policy takes the VMs it would win among the policies in force (lowest priority wins,
as when compiled); a distribution policy takes every VM it selects (several may apply to one VM). VMs on a
host without a registered agent are listed under agent id ``""``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cloudtap.inventory.model import Snapshot
from cloudtap.server.controller.compiler import _Index, agents_of_hosts, compile_policies, selects
from cloudtap.server.controller.distribution import DistributionPolicy
from cloudtap.server.controller.policy import Policy
from cloudtap.server.controller.registry import AgentRecord


@dataclass
class AgentSelection:
    """The selected VMs on one agent's hosts, with their interfaces and MACs."""

    agent_id: str
    agent: str
    host: str
    vms: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    macs: list[str] = field(default_factory=list)


@dataclass
class Selection:
    """Every selected VM: per agent, and as the sets the stored flows are matched against."""

    agents: dict[str, AgentSelection]
    macs: list[int] = field(default_factory=list)  #: MACs of the selected VMs' interfaces
    mac_texts: list[str] = field(default_factory=list)
    ips: list[str] = field(
        default_factory=list
    )  #: IPs of interfaces without a MAC (the BPF's ``host`` terms)
    all_ips: list[str] = field(default_factory=list)  #: every IP of the selected VMs (edges have no MACs)
    vm_ids: list[int] = field(default_factory=list)  #: their inventory ids in the store (tagging)
    vms: list[str] = field(default_factory=list)


def select_vms(
    snap: Snapshot,
    policy: Policy | DistributionPolicy,
    agents: list[AgentRecord],
    in_force: list[Policy] | None = None,
    seen: Mapping[str, Mapping[str, str]] | None = None,
    vm_id: Callable[[str], int] | None = None,
) -> Selection:
    """The VMs ``policy`` would select now (enabled or not), placed on their agents.

    Args:
        in_force: the capture policies stored now (a capture policy competes with them by priority).
        seen: agent id -> {MAC -> interface name} the agents report.
        vm_id: VM key -> its inventory id in the store (0: unknown).
    """
    seen = seen or {}
    idx = _Index(snap)
    if isinstance(policy, Policy):
        proposed = policy.model_copy(update={"enabled": True})
        others = [p for p in (in_force or []) if p.name != policy.name]
        winners = compile_policies(snap, [*others, proposed], [], seen).vm_policy
        chosen = [vm for vm in snap.vms if winners.get(vm.key) == policy.name and policy.action.capture]
    else:
        chosen = [vm for vm in snap.vms if selects(policy.select, vm, idx)]
    agent_of_host = agents_of_hosts(snap.hosts, agents)
    out = Selection({})
    for vm in sorted(chosen, key=lambda v: v.name):
        agent = agent_of_host.get(vm.host)
        key = agent.id if agent else ""
        sel = out.agents.get(key)
        if sel is None:
            sel = out.agents[key] = AgentSelection(
                key, agent.name if agent else "", agent.hostname if agent else ""
            )
        sel.vms.append(vm.name)
        out.vms.append(vm.name)
        for iface in idx.ifaces.get(vm.key, []):
            mac = iface.mac.lower()
            name = iface.device or seen.get(key, {}).get(mac, "")
            if name and name not in sel.interfaces:
                sel.interfaces.append(name)
            if mac:
                sel.macs.append(mac)
                out.mac_texts.append(mac)
                out.macs.append(int(mac.replace(":", ""), 16))
            else:
                out.ips.extend(iface.ips)
            out.all_ips.extend(iface.ips)
        ident = vm_id(vm.key) if vm_id is not None else 0
        if ident:
            out.vm_ids.append(ident)
    return out
