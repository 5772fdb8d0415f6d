"""The resolved cloud: hosts, projects and VMs with their addresses, as flat numpy columns."""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloudtap.errors import ConfigError
from cloudtap.schema.address import mac_to_text
from cloudtap.synth.scenario import Scenario

_VM_OUI = 0xFA163E000000  # OpenStack's locally administered prefix
_HOST_OUI = 0x3CFDFE000000
_COLLECTOR_MAC = 0x3CFDFE00FF01
_FIRST_VM_HOST_PART = 10
_FIRST_HOST_PART = 11


@dataclass(frozen=True)
class Cloud:
    """Every address of the scenario's cloud. VM ``i`` is described by index ``i`` of each vm_* column."""

    host_names: list[str]
    host_ip: np.ndarray  #: uint32, host-order IPv4
    host_mac: np.ndarray  #: uint64
    project_names: list[str]
    project_subnets: list[str]
    project_vni: np.ndarray  #: uint32
    project_vlan: np.ndarray  #: uint16
    vm_names: list[str]
    vm_roles: list[str]
    vm_project: np.ndarray  #: int32 index into project_*
    vm_host: np.ndarray  #: int32 index into host_*
    vm_ip: np.ndarray  #: uint32
    vm_mac: np.ndarray  #: uint64
    collector_ip: int
    collector_mac: int

    @property
    def n_vms(self) -> int:
        """Number of VMs."""
        return len(self.vm_names)

    def select(self, selector: str) -> np.ndarray:
        """VM indices matching ``project/role`` (wildcards allowed; the role part also matches names).

        Args:
            selector: ``"shop/web"``, ``"*/db"``, ``"web"`` (any project), ``"shop/db-01"`` or ``"*"``.

        Returns:
            Sorted int64 indices (may be empty).
        """
        proj_pat, _, vm_pat = selector.partition("/") if "/" in selector else ("*", "", selector)
        hits = [
            i
            for i in range(self.n_vms)
            if fnmatch.fnmatchcase(self.project_names[self.vm_project[i]], proj_pat)
            and (
                fnmatch.fnmatchcase(self.vm_roles[i], vm_pat) or fnmatch.fnmatchcase(self.vm_names[i], vm_pat)
            )
        ]
        return np.asarray(hits, dtype=np.int64)

    def resolve_vm(self, ref: str) -> int:
        """Index of the VM named ``ref`` (``name`` if unique in the cloud, else ``project/name``).

        Raises:
            ConfigError: no such VM, or the bare name is used in several projects.
        """
        if "/" in ref:
            proj, _, name = ref.partition("/")
            hits = [
                i
                for i in range(self.n_vms)
                if self.vm_names[i] == name and self.project_names[self.vm_project[i]] == proj
            ]
        else:
            hits = [i for i in range(self.n_vms) if self.vm_names[i] == ref]
        if not hits:
            raise ConfigError(f"no VM named {ref!r}")
        if len(hits) > 1:
            projects = ", ".join(self.project_names[self.vm_project[i]] for i in hits)
            raise ConfigError(f"VM name {ref!r} exists in several projects ({projects}): write project/{ref}")
        return hits[0]

    def inventory(self) -> dict[str, Any]:
        """The cloud as plain data: projects, hosts and VMs (name, project, host, ip, mac, vni...)."""
        ip = ipaddress.IPv4Address
        return {
            "collector_ip": str(ip(self.collector_ip)),
            "projects": [
                {
                    "name": name,
                    "subnet": self.project_subnets[p],
                    "vni": int(self.project_vni[p]),
                    "vlan": int(self.project_vlan[p]),
                }
                for p, name in enumerate(self.project_names)
            ],
            "hosts": [
                {"name": name, "ip": str(ip(int(self.host_ip[h]))), "mac": mac_to_text(int(self.host_mac[h]))}
                for h, name in enumerate(self.host_names)
            ],
            "vms": [
                {
                    "name": self.vm_names[i],
                    "project": self.project_names[self.vm_project[i]],
                    "role": self.vm_roles[i],
                    "host": self.host_names[self.vm_host[i]],
                    "ip": str(ip(int(self.vm_ip[i]))),
                    "mac": mac_to_text(int(self.vm_mac[i])),
                    "vni": int(self.project_vni[self.vm_project[i]]),
                    "vlan": int(self.project_vlan[self.vm_project[i]]),
                }
                for i in range(self.n_vms)
            ],
        }


def _parse_mac(text: str) -> int:
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ConfigError(f"cannot read MAC address {text!r}: use aa:bb:cc:dd:ee:ff")
    try:
        return int("".join(parts), 16)
    except ValueError:
        raise ConfigError(f"cannot read MAC address {text!r}: use aa:bb:cc:dd:ee:ff") from None


def _hosts(scenario: Scenario) -> tuple[list[str], list[int], list[int]]:
    spec = scenario.cloud.hosts
    underlay = scenario.cloud.underlay
    base = int(underlay.network_address)
    names: list[str] = []
    ips: list[int] = []
    macs: list[int] = []
    items = (
        [(f"hv-{i + 1:02d}", None, None) for i in range(spec)]
        if isinstance(spec, int)
        else [(h.name, h.ip, h.mac) for h in spec]
    )
    for i, (name, ip, mac) in enumerate(items):
        if name in names:
            raise ConfigError(f"cloud.hosts: host name {name!r} is used twice")
        addr = int(ip) if ip is not None else base + _FIRST_HOST_PART + i
        if ipaddress.IPv4Address(addr) not in underlay:
            raise ConfigError(
                f"cloud.hosts: host {name!r} address {ipaddress.IPv4Address(addr)} is outside the "
                f"underlay {underlay}"
            )
        names.append(name)
        ips.append(addr)
        macs.append(_parse_mac(mac) if mac else _HOST_OUI | (i + 1))
    if len(set(ips)) != len(ips):
        raise ConfigError("cloud.hosts: two hosts share an IP address")
    return names, ips, macs


def build_cloud(scenario: Scenario) -> Cloud:
    """Resolve the scenario's cloud: place VMs on hosts and give each an IP and a MAC.

    Args:
        scenario: the validated scenario.

    Returns:
        The resolved :class:`Cloud`.

    Raises:
        ConfigError: duplicate names, unknown hosts, overlapping or too small subnets.
    """
    cloud = scenario.cloud
    host_names, host_ips, host_macs = _hosts(scenario)
    host_index = {n: i for i, n in enumerate(host_names)}
    underlay = cloud.underlay
    nets: list[ipaddress.IPv4Network] = []
    proj_names: list[str] = []
    vnis: list[int] = []
    vlans: list[int] = []
    vm_names: list[str] = []
    vm_roles: list[str] = []
    vm_proj: list[int] = []
    vm_host: list[int] = []
    vm_ip: list[int] = []
    vm_mac: list[int] = []
    rr = 0
    for p, proj in enumerate(cloud.projects):
        where = f"cloud.projects.{p} ({proj.name})"
        if proj.name in proj_names:
            raise ConfigError(f"{where}: project name {proj.name!r} is used twice")
        if p >= 255:
            raise ConfigError("cloud.projects: at most 255 projects")
        net = proj.subnet or ipaddress.IPv4Network(f"10.{10 + (p + 1) // 256}.{(p + 1) % 256}.0/24")
        for other in [underlay, *nets]:
            if net.overlaps(other):
                raise ConfigError(f"{where}: subnet {net} overlaps {other}")
        nets.append(net)
        proj_names.append(proj.name)
        vnis.append(proj.vni if proj.vni is not None else 5001 + p)
        vlans.append(proj.vlan)
        used_ips = {int(v.ip) for v in proj.vms if v.ip is not None}
        next_part = _FIRST_VM_HOST_PART
        names_here: set[str] = set()
        role_counts: dict[str, int] = {}
        for spec in proj.vms:
            for _ in range(spec.count):
                role_counts[spec.role] = role_counts.get(spec.role, 0) + 1
                name = spec.name or f"{spec.role}-{role_counts[spec.role]:02d}"
                if name in names_here:
                    raise ConfigError(f"{where}: VM name {name!r} is used twice")
                names_here.add(name)
                if spec.host is not None:
                    if spec.host not in host_index:
                        raise ConfigError(f"{where}: VM {name!r} is placed on unknown host {spec.host!r}")
                    host = host_index[spec.host]
                else:
                    host = rr % len(host_names)
                    rr += 1
                if spec.ip is not None:
                    if spec.ip not in net:
                        raise ConfigError(f"{where}: VM {name!r} address {spec.ip} is outside {net}")
                    addr = int(spec.ip)
                else:
                    while int(net.network_address) + next_part in used_ips:
                        next_part += 1
                    addr = int(net.network_address) + next_part
                    next_part += 1
                    if addr >= int(net.broadcast_address):
                        raise ConfigError(f"{where}: subnet {net} is too small for its VMs")
                    used_ips.add(addr)
                idx = len(names_here) - 1
                vm_names.append(name)
                vm_roles.append(spec.role)
                vm_proj.append(p)
                vm_host.append(host)
                vm_ip.append(addr)
                vm_mac.append(_VM_OUI | (p << 16) | idx)
    collector = cloud.collector_ip
    collector_ip = (
        int(collector)
        if collector is not None
        else min(int(underlay.network_address) + 250, int(underlay.broadcast_address) - 1)
    )
    return Cloud(
        host_names=host_names,
        host_ip=np.asarray(host_ips, dtype=np.uint32),
        host_mac=np.asarray(host_macs, dtype=np.uint64),
        project_names=proj_names,
        project_subnets=[str(n) for n in nets],
        project_vni=np.asarray(vnis, dtype=np.uint32),
        project_vlan=np.asarray(vlans, dtype=np.uint16),
        vm_names=vm_names,
        vm_roles=vm_roles,
        vm_project=np.asarray(vm_proj, dtype=np.int32),
        vm_host=np.asarray(vm_host, dtype=np.int32),
        vm_ip=np.asarray(vm_ip, dtype=np.uint32),
        vm_mac=np.asarray(vm_mac, dtype=np.uint64),
        collector_ip=collector_ip,
        collector_mac=_COLLECTOR_MAC,
    )
