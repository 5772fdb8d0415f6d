"""What a change would do, before it is applied: the diff of a group's config overlay or of a policy, the
apply mode of each changed key, and which agents (and VMs) it touches. Nothing is stored.

The documents are compared as indented JSON with sorted keys, so a diff shows only what really changed.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from cloudtap.agent.config_overlay import apply_mode, leaves, validate_overlay
from cloudtap.inventory.model import Snapshot
from cloudtap.server.controller.compiler import compile_policies
from cloudtap.server.controller.groups import Group
from cloudtap.server.controller.policy import Policy
from cloudtap.server.controller.registry import AgentRecord


def pretty(doc: Any) -> str:
    """``doc`` as the console shows it: indented JSON, keys sorted (``""`` for no document)."""
    return "" if doc is None else json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def unified(before: Any, after: Any, name: str) -> str:
    """A unified diff of two documents (``""`` when they are equal)."""
    lines = difflib.unified_diff(pretty(before).splitlines(keepends=True), pretty(after).splitlines(keepends=True),
                                 fromfile=f"{name} (current)", tofile=f"{name} (proposed)", n=3)  # fmt: skip
    return "".join(lines)


def changed_leaves(before: dict[str, Any], after: dict[str, Any]) -> dict[str, str]:
    """Dotted keys whose value differs (added, removed or changed) -> ``hot`` / ``restart``."""
    a, b = leaves(before), leaves(after)
    return {k: apply_mode(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def group_preview(group: Group, overlay: dict[str, Any], description: str | None,
                  agents: list[AgentRecord]) -> dict[str, Any]:  # fmt: skip
    """What ``PUT /groups/{name}/config`` with ``overlay`` would do (ConfigError when the overlay is invalid)."""
    modes = validate_overlay(overlay)
    current = {"overlay": group.overlay, "description": group.description}
    proposed = {"overlay": overlay, "description": group.description if description is None else description}
    changed = json.dumps(group.overlay, sort_keys=True) != json.dumps(overlay, sort_keys=True)
    keys = changed_leaves(group.overlay, overlay)
    return {
        "group": group.name,
        "changed": changed or current["description"] != proposed["description"],
        "version": group.version,
        "version_after": group.version + int(changed),
        "current": current,
        "proposed": proposed,
        "diff": unified(current, proposed, f"group {group.name}"),
        "apply": modes,
        "changed_keys": keys,
        "restart_required": sorted(k for k, m in keys.items() if m == "restart"),
        "agents": sorted(a.name for a in agents if a.group == group.name),
    }


def policy_preview(snap: Snapshot, policies: list[Policy], proposed: Policy | None, name: str,
                   agents: list[AgentRecord], seen: Any = None) -> dict[str, Any]:  # fmt: skip
    """What putting ``proposed`` (or deleting ``name``, when ``proposed`` is None) would do: the diff of the
    policy and, per agent whose selection changes, the VMs it would start or stop capturing."""
    old = next((p for p in policies if p.name == name), None)
    others = [p for p in policies if p.name != name]
    after_set = others + ([proposed] if proposed is not None else [])
    before_doc = old.model_dump(mode="json") if old else None
    after_doc = proposed.model_dump(mode="json") if proposed else None
    before = compile_policies(snap, policies, agents, seen)
    after = compile_policies(snap, after_set, agents, seen)
    effects = []
    for agent in agents:
        b, a = before.agents.get(agent.id), after.agents.get(agent.id)
        b_section = b.section() if b else None
        a_section = a.section() if a else None
        if b_section == a_section and (b.vms if b else []) == (a.vms if a else []):
            continue
        vb, va = set(b.vms if b else []), set(a.vms if a else [])
        effects.append({
            "agent_id": agent.id, "agent": agent.name, "host": agent.hostname,
            "active_before": bool(b and b.active), "active_after": bool(a and a.active),
            "vms_before": len(vb), "vms_after": len(va),
            "added": sorted(va - vb), "removed": sorted(vb - va),
        })  # fmt: skip
    return {
        "policy": name,
        "exists": old is not None,
        "delete": proposed is None,
        "changed": before_doc != after_doc,
        "current": before_doc,
        "proposed": after_doc,
        "diff": unified(before_doc, after_doc, f"policy {name}"),
        "agents": effects,
    }
