"""Addresses of a view: one row per (IP, segment, MAC) with the ids of everything behind it.

This is what tagging matches flows against and what the store keeps as ``inventory_address``
(with validity intervals), so SQL can answer "which VM had 10.1.2.3 last Tuesday".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from cloudtap.inventory.view import InventoryView

OPEN = 2**63 - 1
#: Identity fields carried by flow tables, in their column order (see ``server/store/ddl.py``).
ID_FIELDS = ("region", "project", "host", "vm", "subnet", "pod", "service")


@dataclass(frozen=True)
class AddressRecord:
    """One address of the inventory.

    ``ip`` is canonical text (``""``: a MAC without known IP), ``segment`` the VLAN id / VNI of its
    network (0: none known), ``mac`` lower-case text (``""``: none).
    """

    ip: str
    segment: int
    mac: str
    interface_id: int = 0
    region_id: int = 0
    project_id: int = 0
    host_id: int = 0
    vm_id: int = 0
    subnet_id: int = 0
    pod_id: int = 0
    service_id: int = 0
    source: str = ""
    valid_from: int = 0
    valid_to: int = OPEN

    @property
    def key(self) -> tuple[str, int, str]:
        """Identity of the address row: ``(ip, segment, mac)``."""
        return (self.ip, self.segment, self.mac)

    @property
    def payload(self) -> tuple[int, ...]:
        """What it points at (a change of these reopens the interval)."""
        return (self.interface_id, *(getattr(self, f"{f}_id") for f in ID_FIELDS))


@lru_cache(maxsize=1 << 18)
def canonical_ip(text: str) -> str:
    """Canonical text of an IP address (raises ValueError when it is not one)."""
    return str(ipaddress.ip_address(text.strip()))


def canonical_mac(text: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` from any of ``AA-BB-..``, ``aabb.ccdd.eeff``, ``aabbccddeeff`` (ValueError if not a MAC)."""
    digits = "".join(c for c in text.strip().lower() if c not in ":-.")
    if len(digits) != 12 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"not a MAC address: {text!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


class CidrIndex:
    """Longest-prefix match of addresses to subnets, per segment (dict lookups per prefix length)."""

    def __init__(self) -> None:
        self._by_len: dict[int, dict[tuple[int, int, int], list[str]]] = {}

    def add(self, cidr: str, segment: int, subnet_key: str) -> None:
        """Register ``subnet_key`` covering ``cidr`` in ``segment`` (0: any)."""
        net = ipaddress.ip_network(cidr, strict=False)
        table = self._by_len.setdefault(_plen(net), {})
        table.setdefault((segment, net.version, int(net.network_address)), []).append(subnet_key)

    def match(self, ip: str, segment: int = 0, prefer: str = "") -> str:
        """Key of the longest subnet holding ``ip`` (within ``segment`` first, then any); "" if none or ambiguous."""
        if not self._by_len:
            return ""
        addr = _ip_obj(ip)
        for plen in sorted(self._by_len, reverse=True):
            if plen > addr.max_prefixlen:
                continue
            net_int = int(addr) & ~((1 << (addr.max_prefixlen - plen)) - 1)
            table = self._by_len[plen]
            for seg in ((segment, 0) if segment else (0,)):
                hits = table.get((seg, addr.version, net_int))
                if hits:
                    if prefer in hits:
                        return prefer
                    return hits[0] if len(hits) == 1 else ""
        return ""


@lru_cache(maxsize=1 << 18)
def _ip_obj(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _plen(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    return net.prefixlen


def subnet_index(view: InventoryView) -> CidrIndex:
    """A CidrIndex of the view's subnets (segment taken from their network)."""
    nets = view.by_key("network")
    index = CidrIndex()
    for sub in view.snapshot.subnets:
        net = nets.get(sub.network)
        seg = int(net.segment) if net is not None and net.segment else 0
        try:
            index.add(sub.cidr, seg, sub.key)
        except ValueError:
            continue  # connectors validate; a bad CIDR here matches nothing
    return index


def _region_of(view: InventoryView, host_key: str, project_key: str) -> str:
    host = view.by_key("host").get(host_key)
    if host is not None:
        if host.region:
            return str(host.region)
        zone = view.by_key("zone").get(host.zone)
        if zone is not None and zone.region:
            return str(zone.region)
    project = view.by_key("project").get(project_key)
    if project is not None and project.region:
        return str(project.region)
    regions = view.snapshot.regions
    return regions[0].key if len(regions) == 1 else ""


def derive_addresses(view: InventoryView) -> list[AddressRecord]:
    """Every address of the view with its ids (interfaces, pods, service IPs, host addresses).

    Returns:
        Records with ``valid_from=0`` / ``valid_to=OPEN`` (the caller sets the interval); cached on the view.
    """
    if view.derived is not None:
        return view.derived
    view.derived = _derive(view)
    return view.derived


def _derive(view: InventoryView) -> list[AddressRecord]:
    vms, pods = view.by_key("vm"), view.by_key("pod")
    nets, subnets = view.by_key("network"), view.by_key("subnet")
    cidrs = subnet_index(view)
    out: list[AddressRecord] = []
    seen: set[tuple[str, int, str]] = set()
    pods_with_iface: set[str] = set()

    def add(rec: AddressRecord) -> None:
        if rec.key not in seen:
            seen.add(rec.key)
            out.append(rec)

    for iface in view.snapshot.interfaces:
        vm = vms.get(iface.vm)
        pod = pods.get(iface.vm) if vm is None else None
        if pod is not None:
            pods_with_iface.add(pod.key)
        net = nets.get(iface.network)
        seg = int(net.segment) if net is not None and net.segment else 0
        project = (vm.project if vm is not None else "") or (net.project if net is not None else "")
        host = vm.host if vm is not None else (pod.node if pod is not None else "")
        if not project and pod is not None and pod.namespace in view.by_key("project"):
            project = pod.namespace
        ips = [canonical_ip(ip) for ip in iface.ips] or [""]
        for ip in ips:
            sub_key = iface.subnet if iface.subnet in subnets else (cidrs.match(ip, seg) if ip else "")
            sub = subnets.get(sub_key)
            proj = project or (sub.project if sub is not None else "")
            add(
                AddressRecord(
                    ip=ip,
                    segment=seg,
                    mac=iface.mac.lower(),
                    interface_id=view.id_of("interface", iface.key),
                    region_id=view.id_of("region", _region_of(view, host, proj)),
                    project_id=view.id_of("project", proj),
                    host_id=view.id_of("host", host),
                    vm_id=view.id_of("vm", vm.key) if vm is not None else 0,
                    subnet_id=view.id_of("subnet", sub_key),
                    pod_id=view.id_of("pod", pod.key) if pod is not None else 0,
                    source=view.sources.get(("interface", iface.key), ""),
                )
            )
    for pod in view.snapshot.pods:
        if pod.key in pods_with_iface or not pod.ip:
            continue
        ip = canonical_ip(pod.ip)
        proj = pod.namespace if pod.namespace in view.by_key("project") else ""
        sub_key = cidrs.match(ip)
        add(
            AddressRecord(
                ip=ip,
                segment=0,
                mac="",
                region_id=view.id_of("region", _region_of(view, pod.node, proj)),
                project_id=view.id_of("project", proj),
                host_id=view.id_of("host", pod.node),
                subnet_id=view.id_of("subnet", sub_key),
                pod_id=view.id_of("pod", pod.key),
                source=view.sources.get(("pod", pod.key), ""),
            )
        )
    for svc in view.snapshot.services:
        proj = svc.namespace if svc.namespace in view.by_key("project") else ""
        for ip in svc.cluster_ips:
            if not ip or ip.lower() == "none":
                continue
            add(
                AddressRecord(
                    ip=canonical_ip(ip),
                    segment=0,
                    mac="",
                    region_id=view.id_of("region", _region_of(view, "", proj)),
                    project_id=view.id_of("project", proj),
                    service_id=view.id_of("service", svc.key),
                    source=view.sources.get(("service", svc.key), ""),
                )
            )
    for host in view.snapshot.hosts:
        if not host.address:
            continue
        ip = canonical_ip(host.address)
        add(
            AddressRecord(
                ip=ip,
                segment=0,
                mac="",
                region_id=view.id_of("region", _region_of(view, host.key, "")),
                host_id=view.id_of("host", host.key),
                subnet_id=view.id_of("subnet", cidrs.match(ip)),
                source=view.sources.get(("host", host.key), ""),
            )
        )
    return out
