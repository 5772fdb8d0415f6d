"""A stub OpenStack cloud (Keystone v3, Nova v2.1, Neutron v2.0) serving the real APIs' response shapes.

Shapes follow the API references (identity v3 ``POST /v3/auth/tokens`` with ``X-Subject-Token`` and a
service catalog; compute ``GET /servers/detail``, ``/os-hypervisors/detail``,
``/os-availability-zone/detail``; networking ``GET /v2.0/networks|subnets|ports``) and openstacksdk's
own unit-test fixtures (version documents), so the unmodified openstacksdk talks to it.

The world: region ``RegionOne``; projects admin, payments, web; hypervisors compute-01 (AZ az1) and
compute-02 (AZ az2); networks payments-net (vxlan 1001) and web-net (vlan 200); servers db-01,
app-01 (payments) and web-01 (web, two NICs); plus a DHCP port that is not a VM interface.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from stubs.http_stub import JsonStub, Reply

REGION = "RegionOne"
USER, PASSWORD, PROJECT = "admin", "secret", "admin"
_NS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
TS = "2026-11-20T10:00:00Z"


def uid(name: str, hex_only: bool = False) -> str:
    """Deterministic UUID (Nova/Neutron style) or hex id (Keystone style) for ``name``."""
    u = uuid.uuid5(_NS, name)
    return u.hex if hex_only else str(u)


PROJECTS = {name: uid("project-" + name, hex_only=True) for name in ("admin", "payments", "web")}
HYPERVISORS = {  # service host -> (hypervisor hostname, host_ip, AZ, id)
    "compute-01": ("compute-01.example.org", "192.0.2.11", "az1", 1),
    "compute-02": ("compute-02.example.org", "192.0.2.12", "az2", 2),
}


def _version(url: str, vid: str, status: str, version: str = "", min_version: str = "") -> dict[str, Any]:
    return {
        "id": vid,
        "status": status,
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"href": url, "rel": "self"}],
        "min_version": min_version,
        "version": version,
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack+json"}],
    }


def _net(name: str, project: str, kind: str, seg: int, physnet: str | None) -> dict[str, Any]:
    return {
        "id": uid("net-" + name),
        "name": name,
        "admin_state_up": True,
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
        "created_at": TS,
        "updated_at": TS,
        "description": "",
        "dns_domain": "",
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
        "mtu": 1450 if kind == "vxlan" else 1500,
        "port_security_enabled": True,
        "project_id": PROJECTS[project],
        "tenant_id": PROJECTS[project],
        "provider:network_type": kind,
        "provider:physical_network": physnet,
        "provider:segmentation_id": seg,
        "qos_policy_id": None,
        "revision_number": 3,
        "router:external": False,
        "shared": False,
        "status": "ACTIVE",
        "subnets": [uid("subnet-" + name)],
        "tags": [],
        "is_default": False,
    }


def _subnet(net: str, project: str, cidr: str, gateway: str, pool: tuple[str, str]) -> dict[str, Any]:
    return {
        "id": uid("subnet-" + net),
        "name": net.replace("-net", "-subnet"),
        "network_id": uid("net-" + net),
        "cidr": cidr,
        "ip_version": 4,
        "gateway_ip": gateway,
        "allocation_pools": [{"start": pool[0], "end": pool[1]}],
        "dns_nameservers": [],
        "host_routes": [],
        "enable_dhcp": True,
        "ipv6_address_mode": None,
        "ipv6_ra_mode": None,
        "project_id": PROJECTS[project],
        "tenant_id": PROJECTS[project],
        "description": "",
        "service_types": [],
        "subnetpool_id": None,
        "segment_id": None,
        "created_at": TS,
        "updated_at": TS,
        "revision_number": 0,
        "tags": [],
    }


def _port(
    name: str, net: str, mac: str, ip: str, device_id: str, owner: str, host: str, project: str
) -> dict[str, Any]:
    return {
        "id": uid("port-" + name),
        "name": "",
        "network_id": uid("net-" + net),
        "mac_address": mac,
        "fixed_ips": [{"subnet_id": uid("subnet-" + net), "ip_address": ip}],
        "device_id": device_id,
        "device_owner": owner,
        "admin_state_up": True,
        "allowed_address_pairs": [],
        "binding:host_id": host,
        "binding:profile": {},
        "binding:vif_details": {
            "connectivity": "l2",
            "port_filter": True,
            "ovs_hybrid_plug": False,
            "datapath_type": "system",
            "bridge_name": "br-int",
        },
        "binding:vif_type": "ovs",
        "binding:vnic_type": "normal",
        "created_at": TS,
        "updated_at": TS,
        "data_plane_status": None,
        "description": "",
        "dns_assignment": [],
        "dns_name": "",
        "extra_dhcp_opts": [],
        "port_security_enabled": True,
        "project_id": PROJECTS[project],
        "tenant_id": PROJECTS[project],
        "qos_policy_id": None,
        "revision_number": 4,
        "security_groups": [uid("sg-" + project)],
        "status": "ACTIVE",
        "tags": [],
    }


# name -> (project, service host, [(network, mac, ip)])
SERVERS: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "db-01": ("payments", "compute-01", [("payments-net", "fa:16:3e:00:00:01", "10.10.0.5")]),
    "app-01": ("payments", "compute-02", [("payments-net", "fa:16:3e:00:00:02", "10.10.0.6")]),
    "web-01": (
        "web",
        "compute-01",
        [("web-net", "fa:16:3e:00:01:01", "10.20.0.5"), ("payments-net", "fa:16:3e:00:01:02", "10.10.0.7")],
    ),
}


class OpenStackStub(JsonStub):
    """Keystone + Nova + Neutron on one port (``/identity``, ``/compute``, ``/network``)."""

    def __init__(self, password: str = PASSWORD) -> None:
        super().__init__()
        self.password = password
        self.tokens: set[str] = set()
        self.servers = {name: [project, host, list(nics)] for name, (project, host, nics) in SERVERS.items()}

    @property
    def auth_url(self) -> str:
        return f"{self.base_url}/identity/v3"

    def move_server(self, name: str, host: str) -> None:
        """Live-migrate ``name`` to the compute service host ``host`` (what Nova reports after a move)."""
        self.servers[name][1] = host

    # -- Keystone ---------------------------------------------------------------------------------
    def _catalog(self) -> list[dict[str, Any]]:
        def service(kind: str, name: str, url: str) -> dict[str, Any]:
            return {
                "id": uid("service-" + kind, hex_only=True),
                "type": kind,
                "name": name,
                "endpoints": [
                    {
                        "id": uid(f"ep-{kind}-{iface}", hex_only=True),
                        "interface": iface,
                        "region": REGION,
                        "region_id": REGION,
                        "url": url,
                    }
                    for iface in ("public", "internal", "admin")
                ],
            }

        base = self.base_url
        return [
            service("identity", "keystone", f"{base}/identity"),
            service("compute", "nova", f"{base}/compute/v2.1"),
            service("network", "neutron", f"{base}/network"),
        ]

    def _token(self, body: Any) -> Reply:
        try:
            ident = body["auth"]["identity"]
            user = ident["password"]["user"]
            name, password = user["name"], user["password"]
        except (KeyError, TypeError):
            return _error(400, "Bad Request", "Expecting to find identity in auth.")
        if name != USER or password != self.password:
            return _error(401, "Unauthorized", "The request you have made requires authentication.")
        token = uuid.uuid4().hex
        self.tokens.add(token)
        user_id = uid("user-" + name, hex_only=True)
        payload = {
            "token": {
                "methods": ["password"],
                "user": {
                    "domain": {"id": "default", "name": "Default"},
                    "id": user_id,
                    "name": name,
                    "password_expires_at": None,
                },
                "audit_ids": [uuid.uuid4().hex[:22]],
                "expires_at": "2099-01-01T00:00:00.000000Z",
                "issued_at": "2026-11-20T10:00:00.000000Z",
                "project": {
                    "domain": {"id": "default", "name": "Default"},
                    "id": PROJECTS[PROJECT],
                    "name": PROJECT,
                },
                "is_domain": False,
                "roles": [
                    {"id": uid("role-admin", hex_only=True), "name": "admin"},
                    {"id": uid("role-reader", hex_only=True), "name": "reader"},
                ],
                "catalog": self._catalog(),
            }
        }
        return 201, payload, {"X-Subject-Token": token}

    def _projects(self) -> dict[str, Any]:
        url = f"{self.base_url}/identity/v3/projects"
        return {
            "links": {"next": None, "previous": None, "self": url},
            "projects": [
                {
                    "id": pid,
                    "name": name,
                    "domain_id": "default",
                    "description": f"{name} project",
                    "enabled": True,
                    "is_domain": False,
                    "parent_id": "default",
                    "tags": [],
                    "options": {},
                    "links": {"self": f"{url}/{pid}"},
                }
                for name, pid in PROJECTS.items()
            ],
        }

    # -- Nova -------------------------------------------------------------------------------------
    def _servers(self) -> dict[str, Any]:
        out = []
        for name, (project, host, nics) in self.servers.items():
            sid = uid("server-" + name)
            addresses: dict[str, list[dict[str, Any]]] = {}
            for net, mac, ip in nics:
                addresses.setdefault(net, []).append(
                    {"version": 4, "addr": ip, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac}
                )
            hyper, _, az, _ = HYPERVISORS[host]
            link = f"{self.base_url}/compute/v2.1/servers/{sid}"
            out.append(
                {
                    "id": sid,
                    "name": name,
                    "status": "ACTIVE",
                    "tenant_id": PROJECTS[project],
                    "user_id": uid("user-" + USER, hex_only=True),
                    "metadata": {"role": name.split("-")[0]},
                    "hostId": uuid.uuid5(_NS, host + project).hex + "0" * 24,
                    "image": {"id": uid("image-cirros"), "links": []},
                    "flavor": {
                        "vcpus": 1,
                        "ram": 512,
                        "disk": 1,
                        "ephemeral": 0,
                        "swap": 0,
                        "original_name": "m1.tiny",
                        "extra_specs": {},
                    },
                    "created": TS,
                    "updated": TS,
                    "addresses": addresses,
                    "accessIPv4": "",
                    "accessIPv6": "",
                    "links": [{"rel": "self", "href": link}, {"rel": "bookmark", "href": link}],
                    "OS-DCF:diskConfig": "MANUAL",
                    "progress": 0,
                    "OS-EXT-AZ:availability_zone": az,
                    "config_drive": "",
                    "key_name": None,
                    "OS-SRV-USG:launched_at": "2026-11-20T10:00:05.000000",
                    "OS-SRV-USG:terminated_at": None,
                    "OS-EXT-SRV-ATTR:host": host,
                    "OS-EXT-SRV-ATTR:instance_name": "instance-%08x" % (list(self.servers).index(name) + 1),
                    "OS-EXT-SRV-ATTR:hypervisor_hostname": hyper,
                    "OS-EXT-STS:task_state": None,
                    "OS-EXT-STS:vm_state": "active",
                    "OS-EXT-STS:power_state": 1,
                    "os-extended-volumes:volumes_attached": [],
                    "locked": False,
                    "description": None,
                    "tags": [],
                    "trusted_image_certificates": None,
                    "host_status": "UP",
                    "security_groups": [{"name": "default"}],
                }
            )
        return {"servers": out}

    def _hypervisors(self) -> dict[str, Any]:
        out = []
        for host, (hyper, ip, _az, _hid) in HYPERVISORS.items():
            running = [n for n, s in self.servers.items() if s[1] == host]
            out.append(
                {
                    "id": uid("hypervisor-" + host),
                    "hypervisor_hostname": hyper,
                    "host_ip": ip,
                    "hypervisor_type": "QEMU",
                    "hypervisor_version": 8002002,
                    "state": "up",
                    "status": "enabled",
                    "service": {"host": host, "id": uid("service-compute-" + host), "disabled_reason": None},
                    "uptime": None,
                    "servers": [
                        {
                            "name": "instance-%08x" % (list(self.servers).index(n) + 1),
                            "uuid": uid("server-" + n),
                        }
                        for n in running
                    ],
                }
            )
        return {"hypervisors": out, "hypervisors_links": []}

    def _zones(self) -> dict[str, Any]:
        state = {"available": True, "active": True, "updated_at": TS}
        zones: dict[str, dict[str, Any]] = {}
        for host, (_h, _ip, az, _id) in HYPERVISORS.items():
            zones.setdefault(az, {})[host] = {"nova-compute": state}
        info = [
            {
                "zoneName": "internal",
                "zoneState": {"available": True},
                "hosts": {"controller": {"nova-scheduler": state, "nova-conductor": state}},
            }
        ]
        info += [
            {"zoneName": az, "zoneState": {"available": True}, "hosts": hosts} for az, hosts in zones.items()
        ]
        return {"availabilityZoneInfo": info}

    # -- Neutron ----------------------------------------------------------------------------------
    def _ports(self) -> list[dict[str, Any]]:
        ports = []
        for name, (project, host, nics) in self.servers.items():
            for i, (net, mac, ip) in enumerate(nics):
                ports.append(
                    _port(
                        f"{name}-{i}",
                        net,
                        mac,
                        ip,
                        uid("server-" + name),
                        f"compute:{HYPERVISORS[host][2]}",
                        host,
                        project,
                    )
                )
        ports.append(
            _port(
                "dhcp-payments",
                "payments-net",
                "fa:16:3e:99:00:01",
                "10.10.0.2",
                "dhcp" + uid("dhcp-agent") + "-" + uid("net-payments-net"),
                "network:dhcp",
                "controller",
                "payments",
            )
        )
        return ports

    NETWORKS = [
        _net("payments-net", "payments", "vxlan", 1001, None),
        _net("web-net", "web", "vlan", 200, "physnet1"),
    ]
    SUBNETS = [
        _subnet("payments-net", "payments", "10.10.0.0/24", "10.10.0.1", ("10.10.0.2", "10.10.0.254")),
        _subnet("web-net", "web", "10.20.0.0/24", "10.20.0.1", ("10.20.0.2", "10.20.0.254")),
    ]

    # -- dispatch ---------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> Reply:
        base = self.base_url
        path = path.rstrip("/") or "/"
        if path == "/identity":
            return 300, {"versions": {"values": [_version(f"{base}/identity/v3/", "v3.14", "stable")]}}, {}
        if path == "/identity/v3":
            return 200, {"version": _version(f"{base}/identity/v3/", "v3.14", "stable")}, {}
        if path == "/identity/v3/auth/tokens" and method == "POST":
            return self._token(body)
        if path in ("/compute", "/network"):
            if path == "/compute":
                return (
                    200,
                    {"versions": [_version(f"{base}/compute/v2.1/", "v2.1", "CURRENT", "2.96", "2.1")]},
                    {},
                )
            return 200, {"versions": [_version(f"{base}/network/v2.0/", "v2.0", "CURRENT")]}, {}
        if path == "/compute/v2.1":
            return 200, {"version": _version(f"{base}/compute/v2.1/", "v2.1", "CURRENT", "2.96", "2.1")}, {}
        if headers.get("x-auth-token") not in self.tokens:
            return _error(401, "Unauthorized", "The request you have made requires authentication.")
        routes = {
            "/identity/v3/projects": self._projects,
            "/compute/v2.1/servers/detail": self._servers,
            "/compute/v2.1/os-hypervisors/detail": self._hypervisors,
            "/compute/v2.1/os-availability-zone/detail": self._zones,
            "/network/v2.0/networks": lambda: {"networks": copy.deepcopy(self.NETWORKS)},
            "/network/v2.0/subnets": lambda: {"subnets": copy.deepcopy(self.SUBNETS)},
            "/network/v2.0/ports": lambda: {"ports": self._ports()},
        }
        handler = routes.get(path)
        if handler is None or method != "GET":
            return _error(404, "Not Found", f"The resource could not be found: {method} {path}")
        return 200, handler(), {}


def _error(code: int, title: str, message: str) -> Reply:
    return code, {"error": {"code": code, "title": title, "message": message}}, {}
