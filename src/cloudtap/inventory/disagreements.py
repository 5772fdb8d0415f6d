"""Where the hosts and the cloud API disagree: what agents see against what the cloud inventory says.

The agents' snapshot (:func:`cloudtap.inventory.connectors.agents.snapshot_from_agents`) is compared
with a reference snapshot (the cloud connectors' entities: OpenStack, vSphere, a static file...):

- ``unknown_vm``: a VM running on a host that the cloud does not know (matched by key, i.e. the libvirt
  domain uuid = the nova instance id, else by name);
- ``host_mismatch``: the cloud places the VM on another host (a migration it has not recorded);
- ``project_mismatch``: nova's domain metadata names another project than the cloud;
- ``unknown_interface``: a NIC of a known VM whose MAC the cloud does not list;
- ``unlisted_ip``: an IP seen as a port's own address that the cloud's port does not list (spoofing,
  a VM routing for others, an address configured by hand).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from cloudtap.inventory.model import VM, Snapshot

Kind = Literal["unknown_vm", "host_mismatch", "project_mismatch", "unknown_interface", "unlisted_ip"]
KINDS: tuple[str, ...] = get_args(Kind)


@dataclass(frozen=True)
class Disagreement:
    """One fact an agent reports that the cloud inventory contradicts or lacks."""

    kind: str  #: one of :data:`KINDS`
    host: str  #: the agent's host
    vm: str  #: the VM's key as the agent reports it (domain uuid, else domain name)
    vm_name: str
    project: str = ""  #: project key (the agent's nova metadata, else the cloud's)
    mac: str = ""
    ip: str = ""
    cloud: str = ""  #: what the cloud says instead (host, project, IPs), when it says something
    first_seen_ns: int = 0  #: ``unlisted_ip``: when the agent first and last saw the IP
    last_seen_ns: int = 0


def _match_vm(vm: VM, by_key: Mapping[str, VM], by_name: Mapping[str, list[VM]]) -> VM | None:
    found = by_key.get(vm.key)
    if found is not None:
        return found
    named = by_name.get(vm.name, [])
    return named[0] if len(named) == 1 else None


def _host_names(snapshot: Snapshot) -> dict[str, set[str]]:
    return {h.key: {h.key, h.name} for h in snapshot.hosts}


def compare(
    observed: Snapshot, reference: Snapshot, seen: Mapping[tuple[str, str], tuple[int, int]] | None = None
) -> list[Disagreement]:
    """Disagreements of ``observed`` (agents) with ``reference`` (the cloud), VM by VM then port by port.

    Args:
        observed: the agents' snapshot.
        reference: the cloud inventory (merged over its sources).
        seen: ``(MAC, IP) -> (first seen, last seen)`` from the agents' reports (times of ``unlisted_ip``).
    """
    seen = seen or {}
    ref_vms = {v.key: v for v in reference.vms}
    ref_names: dict[str, list[VM]] = {}
    for v in reference.vms:
        ref_names.setdefault(v.name, []).append(v)
    ref_ifaces = {i.mac: i for i in reference.interfaces}
    ref_hosts = _host_names(reference)
    ref_projects = {p.key: p for p in reference.projects}
    obs_projects = {p.key: p for p in observed.projects}
    out: list[Disagreement] = []
    known: dict[str, VM] = {}  # observed VM key -> the cloud's VM
    for vm in observed.vms:
        cloud: VM | None = _match_vm(vm, ref_vms, ref_names)
        if cloud is None:
            out.append(Disagreement("unknown_vm", vm.host, vm.key, vm.name, vm.project))
            continue
        known[vm.key] = cloud
        project = vm.project or cloud.project
        if cloud.host and vm.host not in ref_hosts.get(cloud.host, {cloud.host}):
            out.append(Disagreement("host_mismatch", vm.host, vm.key, vm.name, project, cloud=cloud.host))
        if vm.project and cloud.project and vm.project != cloud.project:
            ours = obs_projects.get(vm.project)
            theirs = ref_projects.get(cloud.project)
            if not (ours and theirs and ours.name == theirs.name):
                out.append(Disagreement("project_mismatch", vm.host, vm.key, vm.name, vm.project,
                                        cloud=theirs.name if theirs else cloud.project))  # fmt: skip
    obs_vms = {v.key: v for v in observed.vms}
    for nic in observed.interfaces:
        owner = obs_vms.get(nic.vm)
        if owner is not None and owner.key not in known:
            continue  # the whole VM is unknown: reported once
        project = (owner.project or known[owner.key].project) if owner is not None else ""
        host, vm_key, vm_name = (owner.host, owner.key, owner.name) if owner is not None else ("", "", "")
        cloud_nic = ref_ifaces.get(nic.mac)
        if cloud_nic is None:
            if owner is not None:
                out.append(Disagreement("unknown_interface", host, vm_key, vm_name, project, mac=nic.mac))
            continue
        listed = set(cloud_nic.ips)
        for ip in nic.ips:
            if ip not in listed:
                first, last = seen.get((nic.mac, ip), (0, 0))
                out.append(Disagreement("unlisted_ip", host, vm_key, vm_name, project, mac=nic.mac, ip=ip,
                                        cloud=",".join(cloud_nic.ips), first_seen_ns=first, last_seen_ns=last))  # fmt: skip
    return out


def visible_to(items: Iterable[Disagreement], projects: frozenset[str], snapshots: Iterable[Snapshot]) -> list[Disagreement]:
    """The disagreements about VMs of ``projects`` (names or keys, as in the snapshots' projects)."""
    own = set()
    for snap in snapshots:
        own |= {p.key for p in snap.projects if p.key in projects or p.name in projects}
    return [d for d in items if d.project and d.project in own]
