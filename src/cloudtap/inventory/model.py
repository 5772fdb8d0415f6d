"""The cloud inventory model: what every connector produces and what the server stores with history.

A connector returns one :class:`Snapshot` (everything it sees now). The inventory store diffs it against
what it holds and records changes with validity intervals (``valid_from`` / ``valid_to``), so a flow from
last week is tagged and named with where its VM was last week.

Every entity has a stable ``key`` (the platform's own id: a Nova server UUID, a vSphere managed object
id, a Kubernetes uid, or a name in a static file) unique within ``(source, kind)``; the store maps keys
to small integer ids (``UInt32``, 0 = unknown) used in the flow tables' ``<side>_<kind>_id`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Entity kinds, in the order of the flow tables' identity columns (plus the ones without a column).
KINDS = ("region", "zone", "project", "host", "vm", "interface", "network", "subnet", "namespace", "node", "pod",
         "service")  # fmt: skip


@dataclass(frozen=True)
class Region:
    key: str
    name: str


@dataclass(frozen=True)
class Zone:
    """Availability zone (OpenStack AZ, vSphere cluster)."""

    key: str
    name: str
    region: str = ""  #: Region.key


@dataclass(frozen=True)
class Project:
    """Project / tenant (OpenStack project, vSphere folder or tag, Kubernetes namespace's owner)."""

    key: str
    name: str
    region: str = ""


@dataclass(frozen=True)
class Host:
    """Hypervisor (Nova hypervisor, ESXi host, Kubernetes node)."""

    key: str
    name: str
    zone: str = ""  #: Zone.key
    region: str = ""
    address: str = ""  #: management IP, where its agent runs


@dataclass(frozen=True)
class Network:
    """L2 network (Neutron network, vSphere port group), with its segment id (VLAN id / VNI) when known."""

    key: str
    name: str
    project: str = ""
    segment: int | None = None  #: VLAN id or VXLAN VNI; flows carry it as ``vlan`` / ``tunnel_id``


@dataclass(frozen=True)
class Subnet:
    key: str
    name: str
    cidr: str
    network: str = ""  #: Network.key
    project: str = ""


@dataclass(frozen=True)
class Interface:
    """A VM's (or pod's) NIC: MAC, IPs, the network it sits on and the host-side device name."""

    key: str
    mac: str  #: lower-case ``aa:bb:cc:dd:ee:ff``
    ips: tuple[str, ...] = ()
    vm: str = ""  #: VM.key (or Pod.key)
    network: str = ""
    subnet: str = ""
    device: str = ""  #: host-side name (``tap1a2b3c4d-5e``, ``vnet3``), when the platform tells


@dataclass(frozen=True)
class VM:
    """Instance (Nova server, vSphere VM)."""

    key: str
    name: str
    project: str = ""
    host: str = ""  #: Host.key: where it runs now
    state: str = ""  #: ACTIVE / poweredOn / ...
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Namespace:
    key: str
    name: str


@dataclass(frozen=True)
class Node:
    """Kubernetes node (also reported as a Host)."""

    key: str
    name: str
    address: str = ""


@dataclass(frozen=True)
class Pod:
    key: str
    name: str
    namespace: str = ""
    node: str = ""
    ip: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Service:
    key: str
    name: str
    namespace: str = ""
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    selector: tuple[tuple[str, str], ...] = ()


@dataclass
class Snapshot:
    """Everything one connector saw at ``taken_at`` (ns since the epoch)."""

    source: str  #: connector name: ``static``, ``openstack``, ``vsphere``, ``kubernetes``, ``agents``
    taken_at: int
    regions: list[Region] = field(default_factory=list)
    zones: list[Zone] = field(default_factory=list)
    projects: list[Project] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    networks: list[Network] = field(default_factory=list)
    subnets: list[Subnet] = field(default_factory=list)
    vms: list[VM] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
