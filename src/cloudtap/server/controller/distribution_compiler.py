"""Compile distribution policies against the inventory and the registry: per agent, the ``broker`` section.

The VMs a policy selects are found as for capture policies (:func:`~.compiler.selects`), and placed on the
agent of their host (:func:`~.compiler.agent_for_host`). Each agent gets one rule per policy selecting at
least one VM on its hosts, with those VMs' interfaces (``Interface.device``, else the name the agent reports
for the MAC; ``*`` when a port's name is not known: the MACs then decide) and MACs, and the destinations its
rules use. A destination that is not defined is left out of
the rule (and named in :attr:`BrokerCompilation.missing`); a rule left without destinations is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudtap.inventory.model import VM, Snapshot
from cloudtap.server.controller.compiler import _Index, agents_of_hosts, selects, vms_by_agent
from cloudtap.server.controller.distribution import Destination, DistributionPolicy
from cloudtap.server.controller.registry import AgentRecord


@dataclass
class BrokerRule:
    """One distribution policy on one agent."""

    name: str
    interfaces: list[str] = field(default_factory=list)
    macs: list[str] = field(default_factory=list)
    bpf: str | None = None
    direction: str = "both"
    truncate: int = 0
    vlan: str = "keep"
    destinations: list[str] = field(default_factory=list)
    vms: list[str] = field(default_factory=list)  #: VM names (for people; not sent to the agent)

    def section(self) -> dict[str, Any]:
        """The rule as the agent's ``broker.rules[]`` entry."""
        return {"name": self.name, "interfaces": self.interfaces, "macs": self.macs, "bpf": self.bpf,
                "direction": self.direction, "truncate": self.truncate, "vlan": self.vlan,
                "destinations": self.destinations}  # fmt: skip


@dataclass
class CompiledBroker:
    """What one agent must distribute (the agent config's ``broker`` section, without ``fuse``)."""

    rules: list[BrokerRule] = field(default_factory=list)
    destinations: list[Destination] = field(default_factory=list)

    def section(self) -> dict[str, Any]:
        """``enabled`` (true when a rule applies), ``destinations`` its rules use, ``rules``."""
        return {"enabled": bool(self.rules), "destinations": [d.model_dump(mode="json") for d in self.destinations],
                "rules": [r.section() for r in self.rules]}  # fmt: skip

    @property
    def vms(self) -> list[str]:
        """Every VM some rule covers."""
        return sorted({v for r in self.rules for v in r.vms})


@dataclass
class BrokerCompilation:
    """Per agent id its :class:`CompiledBroker`; per VM key the policies selecting it; undefined destinations."""

    agents: dict[str, CompiledBroker]
    vm_policies: dict[str, list[str]]
    missing: dict[str, list[str]]  #: policy name -> destinations it names that are not defined


def compile_distribution(
    snap: Snapshot,
    policies: list[DistributionPolicy],
    destinations: list[Destination],
    agents: list[AgentRecord],
    seen: Mapping[str, Mapping[str, str]] | None = None,
) -> BrokerCompilation:
    """Compile ``policies`` (disabled ones ignored) for every agent.

    Args:
        snap: the inventory now.
        policies: every distribution policy.
        destinations: every destination defined at the controller.
        agents: the registered agents.
        seen: agent id -> {MAC (lower case) -> interface name} the agent reports.
    """
    seen = seen or {}
    idx = _Index(snap)
    defined = {d.name: d for d in destinations}
    enabled = sorted((p for p in policies if p.enabled), key=lambda p: (p.priority, p.name))
    missing = {p.name: [d for d in p.destinations if d not in defined] for p in enabled}
    missing = {k: v for k, v in missing.items() if v}
    vm_policies: dict[str, list[str]] = {}
    for vm in snap.vms:
        names = [p.name for p in enabled if selects(p.select, vm, idx)]
        if names:
            vm_policies[vm.key] = names
    agent_of_host = {key: agent.id for key, agent in agents_of_hosts(snap.hosts, agents).items()}
    vms_of = vms_by_agent(snap, agent_of_host) if vm_policies else {}
    out: dict[str, CompiledBroker] = {}
    for agent in agents:
        vms = sorted((vm for vm in vms_of.get(agent.id, []) if vm.key in vm_policies), key=lambda v: v.name)
        out[agent.id] = _for_agent(vms, enabled, vm_policies, defined, idx, seen.get(agent.id, {}))
    return BrokerCompilation(out, vm_policies, missing)


def _for_agent(vms: list[VM], enabled: list[DistributionPolicy], vm_policies: dict[str, list[str]],
               defined: dict[str, Destination], idx: _Index, seen: Mapping[str, str]) -> CompiledBroker:  # fmt: skip
    result = CompiledBroker()
    used: list[str] = []
    for policy in enabled:
        targets = [d for d in policy.destinations if d in defined]
        if not targets:
            continue
        rule = BrokerRule(policy.name, bpf=policy.bpf, direction=policy.direction, truncate=policy.truncate,
                          vlan=policy.vlan, destinations=targets)  # fmt: skip
        unnamed = False  # a selected port whose interface name nobody knows: every interface, the MACs decide
        for vm in vms:
            if policy.name not in vm_policies[vm.key]:
                continue
            for iface in idx.ifaces.get(vm.key, []):
                mac = iface.mac.lower()
                name = iface.device or seen.get(mac, "")
                unnamed |= not name
                if name and name not in rule.interfaces:
                    rule.interfaces.append(name)
                if mac and mac not in rule.macs:
                    rule.macs.append(mac)
            rule.vms.append(vm.name)
        if unnamed and rule.macs:
            rule.interfaces = ["*"]
        if rule.vms:
            result.rules.append(rule)
            used.extend(t for t in targets if t not in used)
    result.destinations = [defined[name] for name in sorted(used)]
    return result


def broker_section(compiled: CompiledBroker, overlay: Mapping[str, Any]) -> dict[str, Any]:
    """The agent's ``broker`` section: the compiled rules over what the group overlay sets by hand (its
    ``fuse`` is kept; its ``enabled``, ``destinations`` and ``rules`` are the controller's)."""
    by_hand = overlay.get("broker") if isinstance(overlay.get("broker"), Mapping) else {}
    return {**dict(by_hand or {}), **compiled.section()}
