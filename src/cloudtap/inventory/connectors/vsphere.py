"""VMware vSphere connector: datacenters, clusters, hosts, VMs, NICs and port groups through pyVmomi.

Everything is read with the PropertyCollector over one ContainerView (two RetrievePropertiesEx calls,
paged), never one round trip per object. Mapping onto :mod:`cloudtap.inventory.model` (keys are managed
object ids, e.g. ``vm-42``; references use keys):

- region: each datacenter;
- zone: each cluster (``ClusterComputeResource``); standalone hosts have no zone;
- project: each VM folder below a datacenter's root VM folder (a VM belongs to its nearest one);
- host: each ESXi host, address the IP of its first VMkernel NIC (``vmk0``);
- vm: each VM (templates skipped): name, project, ``runtime.host``, ``runtime.powerState``;
- network: each port group; segment = VLAN id of a distributed port group with a single VLAN, or of a
  standard port group when every host gives it the same VLAN (trunk/PVLAN/untagged: none);
- interface: each virtual NIC (``config.hardware.device``): MAC, port group, and the guest's IPs from
  ``guest.net`` (VMware Tools; link-local IPv6 dropped), keyed ``<vm>/<device key>``.

Port mirroring sessions of the distributed switches (``config.vspanSession``) are resolved to the VM
NICs of their source ports and kept in ``mirror_sessions`` after each ``fetch`` (see
:mod:`~cloudtap.inventory.connectors.vsphere_mirror`; the Snapshot model has no place for them yet).
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from cloudtap.inventory.connectors.base import ConnectorError
from cloudtap.inventory.connectors.vsphere_mirror import MirrorSession, nic_ports, sessions_of
from cloudtap.inventory.model import VM, Host, Interface, Network, Project, Region, Snapshot, Zone

NAME = "vsphere"


class VSphereConfig(BaseModel):
    """How to reach one vCenter (or ESXi host) over its SOAP API."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="vCenter host name or IP")
    port: int = Field(443, gt=0, lt=65536, description="HTTPS port of the SDK endpoint")
    username: str = Field(description="user, e.g. readonly@vsphere.local (read-only role is enough)")
    password: SecretStr = Field(description="password of ``username``")
    insecure: bool = Field(False, description="skip TLS certificate verification (self-signed vCenter)")
    ca_cert: str | None = Field(None, description="CA bundle to verify vCenter's certificate with")
    timeout_s: float = Field(60.0, gt=0, description="timeout of each API call, seconds")
    page_size: int = Field(1000, ge=1, description="objects per PropertyCollector page")


class VSphereConnector:
    """Reads one vCenter into a :class:`Snapshot` (``fetch``); see the module doc for the mapping."""

    name = NAME

    def __init__(self, config: VSphereConfig) -> None:
        self.config = config
        self.mirror_sessions: list[MirrorSession] = []  #: port mirroring sessions seen by the last fetch

    @property
    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def _fail(self, what: str, exc: BaseException) -> ConnectorError:
        return ConnectorError(f"{NAME} connector ({self._where}): {what} failed: {_cause(exc)}")

    def _connect(self) -> Any:
        from pyVim.connect import SmartConnect

        cfg = self.config
        kwargs: dict[str, Any] = {}
        if not cfg.insecure:  # explicit context: pyVmomi would not verify loopback addresses otherwise
            kwargs["sslContext"] = ssl.create_default_context(cafile=cfg.ca_cert)
        try:
            return SmartConnect(
                host=cfg.host,
                port=cfg.port,
                user=cfg.username,
                pwd=cfg.password.get_secret_value(),
                disableSslCertValidation=cfg.insecure,
                httpConnectionTimeout=cfg.timeout_s,
                connectionPoolTimeout=-1,
                **kwargs,
            )
        except Exception as exc:  # noqa: BLE001 - translated into one error type with the cause
            raise self._fail("login", exc) from exc

    def fetch(self) -> Snapshot:
        """Read everything now.

        Returns:
            The vCenter's Snapshot.

        Raises:
            ConnectorError: naming this connector, the step that failed and why (bad credentials, TLS
                verification, unreachable vCenter, API fault).
        """
        from pyVim.connect import Disconnect

        taken = time.time_ns()
        si = self._connect()
        try:
            objects, portgroups, switches = self._collect(si)
        except ConnectorError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail("reading the inventory", exc) from exc
        finally:
            try:
                Disconnect(si)
            except Exception:  # noqa: BLE001 - logging out must not hide the real outcome
                pass
        self.mirror_sessions = _mirror_sessions(objects, switches)
        return _snapshot(taken, objects, portgroups)

    def _collect(
        self, si: Any
    ) -> tuple[dict[str, tuple[Any, dict[str, Any]]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        from pyVmomi import vim

        content = si.RetrieveContent()
        entities = {
            vim.Datacenter: ["name", "parent", "vmFolder"],
            vim.Folder: ["name", "parent"],
            vim.ComputeResource: ["name", "parent"],
            vim.HostSystem: ["name", "parent", "config.network.vnic", "config.network.portgroup"],
            vim.VirtualMachine: [
                "name",
                "parent",
                "runtime.host",
                "runtime.powerState",
                "config.template",
                "config.hardware.device",
                "guest.net",
            ],
            vim.Network: ["name", "parent"],
        }
        objects = self._retrieve(content, entities)
        switching = self._retrieve(
            content,
            {
                vim.dvs.DistributedVirtualPortgroup: ["key", "config.defaultPortConfig", "config.uplink"],
                vim.DistributedVirtualSwitch: ["config.uplinkPortgroup", "uuid"],
                vim.dvs.VmwareDistributedVirtualSwitch: [
                    "config.uplinkPortgroup",
                    "uuid",
                    "config.vspanSession",
                ],
            },
        )
        uplinks = {
            _moid(ref)
            for obj, props in switching.values()
            if isinstance(obj, vim.DistributedVirtualSwitch)
            for ref in props.get("config.uplinkPortgroup") or []
        }
        pgs = {}
        for moid, (obj, props) in switching.items():
            if isinstance(obj, vim.dvs.DistributedVirtualPortgroup):
                pgs[moid] = {**props, "config.uplink": bool(props.get("config.uplink")) or moid in uplinks}
        switches = {
            m: props for m, (obj, props) in switching.items() if isinstance(obj, vim.DistributedVirtualSwitch)
        }
        return objects, pgs, switches

    def _retrieve(self, content: Any, types: dict[Any, list[str]]) -> dict[str, tuple[Any, dict[str, Any]]]:
        from pyVmomi import vim, vmodl

        pc = vmodl.query.PropertyCollector
        view = content.viewManager.CreateContainerView(content.rootFolder, list(types), True)
        try:
            spec = pc.FilterSpec(
                objectSet=[
                    pc.ObjectSpec(
                        obj=view,
                        skip=True,
                        selectSet=[
                            pc.TraversalSpec(
                                name="view", path="view", skip=False, type=vim.view.ContainerView
                            )
                        ],
                    )
                ],
                propSet=[pc.PropertySpec(type=t, pathSet=paths) for t, paths in types.items()],
            )
            out: dict[str, tuple[Any, dict[str, Any]]] = {}
            result = content.propertyCollector.RetrievePropertiesEx(
                [spec], pc.RetrieveOptions(maxObjects=self.config.page_size)
            )
            while result is not None:
                for obj in result.objects:
                    out[obj.obj._moId] = (obj.obj, {p.name: p.val for p in obj.propSet})
                if not result.token:
                    break
                result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
            return out
        finally:
            view.Destroy()


def _moid(ref: Any) -> str:
    return ref._moId if ref is not None else ""


def _mirror_sessions(
    objects: dict[str, tuple[Any, dict[str, Any]]], switches: dict[str, dict[str, Any]]
) -> list[MirrorSession]:
    from pyVmomi import vim

    ports = [
        (*port, vm)
        for vm, (obj, p) in objects.items()
        if isinstance(obj, vim.VirtualMachine) and not p.get("config.template")
        for port in nic_ports(vm, p.get("config.hardware.device") or [])
    ]
    out: list[MirrorSession] = []
    for moid, props in sorted(switches.items()):
        out.extend(
            sessions_of(moid, str(props.get("uuid") or ""), props.get("config.vspanSession") or [], ports)
        )
    return out


def _snapshot(
    taken: int, objects: dict[str, tuple[Any, dict[str, Any]]], portgroups: dict[str, dict[str, Any]]
) -> Snapshot:
    from pyVmomi import vim

    parent = {moid: _moid(props.get("parent")) for moid, (_o, props) in objects.items()}
    kind = {moid: obj for moid, (obj, _p) in objects.items()}
    props = {moid: p for moid, (_o, p) in objects.items()}

    def ancestors(moid: str) -> list[str]:
        chain, seen = [], set()
        while moid and moid not in seen:
            seen.add(moid)
            moid = parent.get(moid, "")
            if moid:
                chain.append(moid)
        return chain

    def datacenter(moid: str) -> str:
        return next((a for a in ancestors(moid) if isinstance(kind.get(a), vim.Datacenter)), "")

    snap = Snapshot(source=NAME, taken_at=taken)
    root_vm_folders = set()
    for moid, obj in kind.items():
        if isinstance(obj, vim.Datacenter):
            snap.regions.append(Region(key=moid, name=props[moid].get("name", moid)))
            root_vm_folders.add(_moid(props[moid].get("vmFolder")))
    project_folders = {
        moid
        for moid, obj in kind.items()
        if isinstance(obj, vim.Folder)
        and moid not in root_vm_folders
        and any(a in root_vm_folders for a in ancestors(moid))
    }
    for moid in sorted(project_folders):
        snap.projects.append(Project(key=moid, name=props[moid].get("name", moid), region=datacenter(moid)))
    for moid, obj in kind.items():
        if isinstance(obj, vim.ClusterComputeResource):
            snap.zones.append(Zone(key=moid, name=props[moid].get("name", moid), region=datacenter(moid)))

    std_vlans: dict[str, set[int]] = {}
    for moid, obj in kind.items():
        if not isinstance(obj, vim.HostSystem):
            continue
        p = props[moid]
        cluster = parent.get(moid, "")
        vnics = p.get("config.network.vnic") or []
        address = next(
            (v.spec.ip.ipAddress for v in vnics if v.spec and v.spec.ip and v.spec.ip.ipAddress), ""
        )
        snap.hosts.append(
            Host(
                key=moid,
                name=p.get("name", moid),
                region=datacenter(moid),
                address=address,
                zone=cluster if isinstance(kind.get(cluster), vim.ClusterComputeResource) else "",
            )
        )
        for pg in p.get("config.network.portgroup") or []:
            std_vlans.setdefault(pg.spec.name, set()).add(int(pg.spec.vlanId or 0))

    for moid, obj in kind.items():
        if not isinstance(obj, vim.Network):
            continue
        name = props[moid].get("name", moid)
        if moid in portgroups:
            pg = portgroups[moid]
            if pg.get("config.uplink"):
                continue
            segment = _dvpg_vlan(pg.get("config.defaultPortConfig"))
        else:
            vlans = std_vlans.get(name, set())
            segment = next(iter(vlans)) if len(vlans) == 1 and 0 < next(iter(vlans)) < 4095 else None
        snap.networks.append(Network(key=moid, name=name, segment=segment))
    pg_key_to_moid = {pg.get("key") or m: m for m, pg in portgroups.items()}

    for moid, obj in kind.items():
        if not isinstance(obj, vim.VirtualMachine) or props[moid].get("config.template"):
            continue
        p = props[moid]
        project = next((a for a in ancestors(moid) if a in project_folders), "")
        snap.vms.append(
            VM(
                key=moid,
                name=p.get("name", moid),
                project=project,
                host=_moid(p.get("runtime.host")),
                state=str(p.get("runtime.powerState") or ""),
            )
        )
        snap.interfaces.extend(_nics(moid, p, pg_key_to_moid))
    return snap


def _dvpg_vlan(setting: Any) -> int | None:
    from pyVmomi import vim

    vlan = getattr(setting, "vlan", None)
    if isinstance(vlan, vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec) and 0 < vlan.vlanId < 4095:
        return int(vlan.vlanId)
    return None


def _nics(vm: str, props: dict[str, Any], pg_key_to_moid: dict[str, str]) -> list[Interface]:
    from pyVmomi import vim

    guest = props.get("guest.net") or []
    by_key = {g.deviceConfigId: g for g in guest if g.deviceConfigId is not None}
    by_mac = {(g.macAddress or "").lower(): g for g in guest}
    out = []
    for dev in props.get("config.hardware.device") or []:
        if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
            continue
        mac = (dev.macAddress or "").lower()
        backing = dev.backing
        network = ""
        if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
            key = str((backing.port.portgroupKey if backing.port else "") or "")
            network = pg_key_to_moid.get(key, key)
        elif isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
            network = _moid(backing.network)
        info = by_key.get(dev.key) or by_mac.get(mac)
        ips = tuple(ip for ip in (info.ipAddress if info else []) or [] if not ip.lower().startswith("fe80:"))
        out.append(Interface(key=f"{vm}/{dev.key}", mac=mac, ips=ips, vm=vm, network=network))
    return out


def _cause(exc: BaseException) -> str:
    """A short human reason for a pyVmomi failure."""
    from pyVmomi import vim

    if isinstance(exc, vim.fault.InvalidLogin):
        return "authentication refused (wrong user name or password)"
    if isinstance(exc, vim.fault.NoPermission):
        return f"permission denied on {getattr(exc, 'privilegeId', '?')}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed (set insecure or ca_cert): {exc}"
    if isinstance(exc, OSError):
        return f"cannot reach vCenter: {exc}"
    msg = getattr(exc, "msg", None) or str(exc)
    return f"{type(exc).__name__}: {msg}"


def from_settings(config: Any) -> VSphereConnector:
    """The connector for a settings section: a :class:`VSphereConfig`, another pydantic model or a mapping."""
    if not isinstance(config, VSphereConfig):
        data = config.model_dump() if isinstance(config, BaseModel) else dict(config)
        config = VSphereConfig.model_validate(data)
    return VSphereConnector(config)
