"""OpenStack connector: Keystone projects, Nova servers/hypervisors/AZs, Neutron networks/subnets/ports.

Talks to the cloud through openstacksdk (``pip install cloudtap[server]``) with an admin-scoped password
login. Mapping onto :mod:`cloudtap.inventory.model`:

- region: the configured ``region`` (one connector per region);
- zone: each Nova availability zone (``internal`` skipped); a host's zone from ``os-availability-zone``;
- project: each Keystone project (id, name);
- host: each hypervisor, keyed by its compute service host (what servers' ``OS-EXT-SRV-ATTR:host`` and
  ports' ``binding:host_id`` name), address ``host_ip``;
- vm: each Nova server (id, name, project, host, status, tags + ``key=value`` metadata);
- network: each Neutron network with ``provider:segmentation_id`` (VLAN id / VNI) as segment;
- subnet: each Neutron subnet (CIDR, network, project);
- interface: each Neutron port bound to a server (MAC, fixed IPs, network, first subnet), with the host
  device ``tap`` + port id[:11] as Nova/OVS name it; NICs only Nova reports (no Neutron port visible)
  are added from the server's ``addresses`` (fixed IPs only) keyed ``<server id>/<mac>``.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from cloudtap.inventory.connectors.base import ConnectorError
from cloudtap.inventory.model import VM, Host, Interface, Network, Project, Region, Snapshot, Subnet, Zone

NAME = "openstack"


class OpenStackConfig(BaseModel):
    """How to reach one OpenStack region (Keystone v3 password auth, admin scope to see all projects)."""

    model_config = ConfigDict(extra="forbid")

    auth_url: str = Field(description="Keystone v3 URL, e.g. https://keystone.example.org:5000/v3")
    username: str = Field(description="user name (needs the admin role to list all projects' servers/ports)")
    password: SecretStr = Field(description="password of ``username``")
    project_name: str = Field("admin", description="project to scope the token to")
    user_domain_name: str = Field("Default", description="domain of the user")
    project_domain_name: str = Field("Default", description="domain of the project")
    region: str = Field("RegionOne", description="region to read (endpoints of this region in the catalog)")
    interface: Literal["public", "internal", "admin"] = Field(
        "public", description="catalog endpoint interface"
    )
    verify_tls: bool = Field(True, description="verify the API's TLS certificates")
    ca_cert: str | None = Field(
        None, description="CA bundle file to verify them with (default: system store)"
    )
    timeout_s: float = Field(30.0, gt=0, description="timeout of each API call, seconds")
    all_projects: bool = Field(
        True, description="list servers of all projects (admin); False: the scoped project"
    )


class OpenStackConnector:
    """Reads one OpenStack region into a :class:`Snapshot` (``fetch``); see the module doc for the mapping."""

    name = NAME

    def __init__(self, config: OpenStackConfig) -> None:
        self.config = config

    def _connect(self) -> Any:
        import openstack  # heavy import: only when the connector is used

        cfg = self.config
        verify: bool | str = (cfg.ca_cert or True) if cfg.verify_tls else False
        return openstack.connect(
            auth_url=cfg.auth_url,
            username=cfg.username,
            password=cfg.password.get_secret_value(),
            project_name=cfg.project_name,
            user_domain_name=cfg.user_domain_name,
            project_domain_name=cfg.project_domain_name,
            region_name=cfg.region,
            interface=cfg.interface,
            verify=verify,
            api_timeout=cfg.timeout_s,
            identity_api_version="3",
            load_yaml_config=False,
            load_envvars=False,
        )

    def fetch(self) -> Snapshot:
        """Read everything now.

        Returns:
            The region's Snapshot.

        Raises:
            ConnectorError: naming this connector, the call that failed and why (bad credentials,
                unreachable API, missing permission, HTTP error).
        """
        taken = time.time_ns()
        conn = self._connect()
        try:
            return self._read(conn, taken)
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                pass

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - translated into one error type with the cause
            raise ConnectorError(
                f"{NAME} connector ({self.config.auth_url}): {what} failed: {_cause(exc)}"
            ) from exc

    def _read(self, conn: Any, taken: int) -> Snapshot:
        cfg = self.config
        region = cfg.region
        self._call("authentication", conn.authorize)
        projects = self._call("listing Keystone projects", lambda: list(conn.identity.projects()))
        servers = self._call(
            "listing Nova servers",
            lambda: list(conn.compute.servers(details=True, all_projects=cfg.all_projects)),
        )
        hypervisors = self._call(
            "listing Nova hypervisors", lambda: list(conn.compute.hypervisors(details=True))
        )
        zones = self._call(
            "listing availability zones", lambda: list(conn.compute.availability_zones(details=True))
        )
        networks = self._call("listing Neutron networks", lambda: list(conn.network.networks()))
        subnets = self._call("listing Neutron subnets", lambda: list(conn.network.subnets()))
        ports = self._call("listing Neutron ports", lambda: list(conn.network.ports()))

        snap = Snapshot(source=NAME, taken_at=taken, regions=[Region(key=region, name=region)])
        host_zone: dict[str, str] = {}
        zone_names: set[str] = set()
        for az in zones:
            if az.name == "internal":
                continue
            zone_names.add(az.name)
            for host in az.hosts or {}:
                host_zone[host] = az.name
        zone_names.update(s.availability_zone for s in servers if s.availability_zone)
        snap.zones = [Zone(key=z, name=z, region=region) for z in sorted(zone_names)]
        snap.projects = [Project(key=p.id, name=p.name or p.id, region=region) for p in projects]

        hosts: dict[str, Host] = {}
        for hv in hypervisors:
            service = hv.service_details or {}
            key = service.get("host") or hv.name
            hosts[key] = Host(
                key=key, name=key, zone=host_zone.get(key, ""), region=region, address=hv.host_ip or ""
            )
        for s in servers:  # hosts we only know from their servers (hypervisor listing filtered/forbidden)
            if s.compute_host and s.compute_host not in hosts:
                hosts[s.compute_host] = Host(
                    key=s.compute_host, name=s.compute_host, zone=s.availability_zone or "", region=region
                )
        snap.hosts = list(hosts.values())

        snap.networks = [
            Network(key=n.id, name=n.name or n.id, project=n.project_id or "", segment=_segment(n))
            for n in networks
        ]
        snap.subnets = [
            Subnet(
                key=s.id, name=s.name or s.id, cidr=s.cidr, network=s.network_id, project=s.project_id or ""
            )
            for s in subnets
        ]

        snap.vms = [
            VM(
                key=s.id,
                name=s.name,
                project=s.project_id or "",
                host=s.compute_host or "",
                state=s.status or "",
                tags=_tags(s),
            )
            for s in servers
        ]
        snap.interfaces = _interfaces(servers, ports, networks)
        return snap


def _segment(net: Any) -> int | None:
    seg = net.provider_segmentation_id
    if seg is None:
        for segment in net.segments or []:  # multi-segment networks
            seg = segment.get("provider:segmentation_id")
            if seg is not None:
                break
    return int(seg) if seg is not None else None


def _tags(server: Any) -> tuple[str, ...]:
    tags = list(server.tags or [])
    tags += [f"{k}={v}" for k, v in sorted((server.metadata or {}).items())]
    return tuple(tags)


def _interfaces(servers: list[Any], ports: list[Any], networks: list[Any]) -> list[Interface]:
    server_ids = {s.id for s in servers}
    out: list[Interface] = []
    seen: set[tuple[str, str]] = set()
    for p in ports:
        if p.device_id not in server_ids:  # DHCP, router, LB ports: not VM interfaces
            continue
        fixed = p.fixed_ips or []
        mac = (p.mac_address or "").lower()
        seen.add((p.device_id, mac))
        out.append(
            Interface(
                key=p.id,
                mac=mac,
                ips=tuple(ip["ip_address"] for ip in fixed),
                vm=p.device_id,
                network=p.network_id or "",
                subnet=fixed[0]["subnet_id"] if fixed else "",
                device="tap" + p.id[:11],
            )
        )
    net_by_name = {n.name: n.id for n in networks if n.name}
    for s in servers:
        nics: dict[str, tuple[str, list[str]]] = {}
        for net_name, addrs in (s.addresses or {}).items():
            for a in addrs:
                mac = (a.get("OS-EXT-IPS-MAC:mac_addr") or "").lower()
                if not mac or (s.id, mac) in seen:
                    continue
                _, ips = nics.setdefault(mac, (net_name, []))
                if a.get("OS-EXT-IPS:type", "fixed") == "fixed":
                    ips.append(a["addr"])
        for mac, (net_name, ips) in nics.items():
            out.append(
                Interface(
                    key=f"{s.id}/{mac}",
                    mac=mac,
                    ips=tuple(ips),
                    vm=s.id,
                    network=net_by_name.get(net_name, ""),
                )
            )
    return out


def _cause(exc: BaseException) -> str:
    """A short human reason for an openstacksdk / keystoneauth failure."""
    from keystoneauth1 import exceptions as ks

    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:  # openstacksdk wraps keystoneauth errors (SDKException)
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        if isinstance(e, ks.Unauthorized):
            return "authentication refused (wrong user name, password or project?): HTTP 401"
        if isinstance(e, ks.DiscoveryFailure | ks.ConnectFailure | ks.ConnectTimeout):
            return f"cannot reach the API: {e}"
    status = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    if status == 403:
        return f"permission denied (the user needs the admin role): {exc}"
    if status:
        return f"HTTP {status}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def from_settings(config: Any) -> OpenStackConnector:
    """The connector for a settings section: a :class:`OpenStackConfig`, another pydantic model or a mapping."""
    if not isinstance(config, OpenStackConfig):
        data = config.model_dump() if isinstance(config, BaseModel) else dict(config)
        config = OpenStackConfig.model_validate(data)
    return OpenStackConnector(config)
