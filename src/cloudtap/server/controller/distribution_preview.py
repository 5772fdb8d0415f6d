"""What a distribution policy change would do, before it is applied: the policy's diff and, per agent whose
``broker`` rules change, the VMs it would start or stop copying. Nothing is stored."""

from __future__ import annotations

from typing import Any

from cloudtap.inventory.model import Snapshot
from cloudtap.server.controller.distribution import Destination, DistributionPolicy
from cloudtap.server.controller.distribution_compiler import compile_distribution
from cloudtap.server.controller.preview import unified
from cloudtap.server.controller.registry import AgentRecord


def distribution_preview(snap: Snapshot, policies: list[DistributionPolicy], destinations: list[Destination],
                         proposed: DistributionPolicy | None, name: str, agents: list[AgentRecord],
                         seen: Any = None) -> dict[str, Any]:  # fmt: skip
    """What putting ``proposed`` (or deleting ``name``, when ``proposed`` is None) would do."""
    old = next((p for p in policies if p.name == name), None)
    after_set = [p for p in policies if p.name != name] + ([proposed] if proposed is not None else [])
    before_doc = old.model_dump(mode="json") if old else None
    after_doc = proposed.model_dump(mode="json") if proposed else None
    before = compile_distribution(snap, policies, destinations, agents, seen)
    after = compile_distribution(snap, after_set, destinations, agents, seen)
    effects = []
    for agent in agents:
        b, a = before.agents[agent.id], after.agents[agent.id]
        if b.section() == a.section():
            continue
        vb = {v for r in b.rules if r.name == name for v in r.vms}
        va = {v for r in a.rules if r.name == name for v in r.vms}
        effects.append({"agent_id": agent.id, "agent": agent.name, "host": agent.hostname,
                        "enabled_before": bool(b.rules), "enabled_after": bool(a.rules),
                        "added": sorted(va - vb), "removed": sorted(vb - va),
                        "destinations": [d.name for d in a.destinations]})  # fmt: skip
    return {
        "policy": name,
        "exists": old is not None,
        "delete": proposed is None,
        "changed": before_doc != after_doc,
        "current": before_doc,
        "proposed": after_doc,
        "diff": unified(before_doc, after_doc, f"distribution policy {name}"),
        "missing_destinations": after.missing.get(name, []),
        "agents": effects,
    }
