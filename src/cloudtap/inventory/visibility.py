"""What of the inventory a project-bound user may see: their projects and what belongs to them.

A user bound to projects sees those projects, their networks, subnets, VMs and the VMs' interfaces,
the hosts those VMs run on (a host is shared, but where your VM runs is yours to know), regions and
zones, and Kubernetes namespaces named like their projects with those namespaces' pods and services.
Nothing else: no other project's names, VMs or counts.
"""

from __future__ import annotations

from dataclasses import replace

from cloudtap.inventory.model import Snapshot


def visible(snapshot: Snapshot, projects: frozenset[str]) -> Snapshot:
    """``snapshot`` cut down to what a user of ``projects`` (names or keys) may see."""
    own = {p.key for p in snapshot.projects if p.name in projects or p.key in projects}
    vms = [v for v in snapshot.vms if v.project in own]
    vm_keys = {v.key for v in vms}
    namespaces = [n for n in snapshot.namespaces if n.name in projects or n.key in own]
    ns_keys = {n.key for n in namespaces}
    pods = [p for p in snapshot.pods if p.namespace in ns_keys]
    owners = vm_keys | {p.key for p in pods}
    hosts = {v.host for v in vms}
    nodes = {p.node for p in pods}
    return replace(
        snapshot,
        projects=[p for p in snapshot.projects if p.key in own],
        hosts=[h for h in snapshot.hosts if h.key in hosts],
        networks=[n for n in snapshot.networks if n.project in own],
        subnets=[s for s in snapshot.subnets if s.project in own],
        vms=vms,
        interfaces=[i for i in snapshot.interfaces if i.vm in owners],
        namespaces=namespaces,
        nodes=[n for n in snapshot.nodes if n.key in nodes],
        pods=pods,
        services=[s for s in snapshot.services if s.namespace in ns_keys],
    )
