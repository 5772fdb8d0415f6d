"""What a project-scoped operator may change: agents on hosts of only their projects, their own policies.

An operator bound to projects (``Principal.projects_for(...)`` a set of project names) may act on an
agent only when every VM the inventory places on the agent's host belongs to those projects (and at
least one VM does: an empty or unknown host is nobody's), and may put or delete only policies whose
selector names one of their projects exactly (no glob, no other project known by that key). Group
configs and group-wide start/stop touch many hosts: they need an unrestricted grant. Each check answers
None (allowed) or the reason of the refusal.
"""

from __future__ import annotations

from collections.abc import Iterable

from cloudtap.inventory.model import Snapshot
from cloudtap.server.controller.compiler import host_matches_agent
from cloudtap.server.controller.policy import Policy
from cloudtap.server.controller.registry import AgentRecord

_GLOB = frozenset("*?[]")


def _names(projects: Iterable[str]) -> str:
    return ", ".join(sorted(projects)) or "none"


def agent_projects(snap: Snapshot, agent: AgentRecord) -> tuple[list[str], set[str]]:
    """The agent's inventory hosts (names) and the projects (names) of the VMs on them."""
    project_names = {p.key: p.name for p in snap.projects}
    hosts = [h for h in snap.hosts if host_matches_agent(h, agent)]
    keys = {h.key for h in hosts}
    projects = {project_names.get(vm.project, vm.project) for vm in snap.vms if vm.host in keys}
    return [h.name for h in hosts], projects


def agent_refusal(snap: Snapshot, agent: AgentRecord, allowed: frozenset[str] | None) -> str | None:
    """Why a caller limited to ``allowed`` projects may not act on ``agent`` (None: they may)."""
    if allowed is None:
        return None
    hosts, projects = agent_projects(snap, agent)
    if not hosts:
        return (f"agent {agent.name!r} runs on host {agent.hostname!r}, which the inventory does not know: only an "
                f"unrestricted operator may act on it (your projects: {_names(allowed)})")  # fmt: skip
    if not projects:
        return f"host {hosts[0]!r} of agent {agent.name!r} runs no VM of your projects ({_names(allowed)})"
    outside = projects - allowed
    if outside:
        return (f"host {hosts[0]!r} of agent {agent.name!r} also runs VMs of projects outside your scope "
                f"({_names(outside)})")  # fmt: skip
    return None


def policy_refusal(snap: Snapshot, policy: Policy, allowed: frozenset[str] | None) -> str | None:
    """Why a caller limited to ``allowed`` projects may not put or delete ``policy`` (None: they may)."""
    if allowed is None:
        return None
    project = policy.select.project
    if project is None:
        return (f"policy {policy.name!r} selects VMs of every project: limit select.project to one of yours "
                f"({_names(allowed)})")  # fmt: skip
    if _GLOB & set(project):
        return (f"policy {policy.name!r} selects projects by the pattern {project!r}: name one of yours exactly "
                f"({_names(allowed)})")  # fmt: skip
    if project not in allowed:
        return f"policy {policy.name!r} selects project {project!r}, outside your scope ({_names(allowed)})"
    clash = {p.name for p in snap.projects if project in (p.key, p.name)} - allowed
    if clash:
        return f"policy {policy.name!r}: {project!r} also names project(s) outside your scope ({_names(clash)})"
    return None


def unrestricted_refusal(what: str, allowed: frozenset[str] | None) -> str | None:
    """Why a caller limited to projects may not do ``what`` (a group-wide change); None when unrestricted."""
    if allowed is None:
        return None
    return f"{what} affects every host of the group: it needs a role on every project (yours: {_names(allowed)})"
