"""Static inventory: a YAML or CSV file describing the cloud (the demo's default; see docs/inventory.md).

YAML lists ``regions``, ``zones``, ``projects``, ``hosts``, ``networks``, ``subnets``, ``vms`` (each
with its ``interfaces``), ``namespaces``, ``nodes``, ``pods`` and ``services``; every entity's
``key`` defaults to its name (a VM's to ``project/name``) and references use keys. An optional
``valid_from`` (ISO 8601 or ns) says since when the file is true (default: when it is read).

CSV has one row per VM interface: ``name`` (required), ``project``, ``host``, ``ip`` (``;``-separated
for several), ``mac``, ``network``, ``segment``, ``subnet``, ``cidr``, ``region``, ``zone``, ``state``,
``device``, ``tags`` (``;``-separated), ``key``; projects, hosts, networks and subnets are implied.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloudtap.errors import ConfigError
from cloudtap.inventory.addresses import canonical_ip, canonical_mac
from cloudtap.inventory.model import (
    VM,
    Host,
    Interface,
    Namespace,
    Network,
    Node,
    Pod,
    Project,
    Region,
    Service,
    Snapshot,
    Subnet,
    Zone,
)

NAME = "static"
CSV_COLUMNS = (
    "key", "name", "project", "host", "ip", "mac", "network", "segment", "subnet", "cidr", "region", "zone",
    "state", "device", "tags",
)  # fmt: skip


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Named(_M):
    name: str = Field(min_length=1)
    key: str | None = None


class RegionIn(_Named):
    pass


class ZoneIn(_Named):
    region: str = ""


class ProjectIn(_Named):
    region: str = ""


class HostIn(_Named):
    zone: str = ""
    region: str = ""
    address: str = ""

    @field_validator("address")
    @classmethod
    def _ip(cls, v: str) -> str:
        return canonical_ip(v) if v else v


class NetworkIn(_Named):
    project: str = ""
    segment: int | None = Field(None, ge=0, le=0xFFFFFF)


class SubnetIn(_Named):
    cidr: str
    network: str = ""
    project: str = ""

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return str(ipaddress.ip_network(v.strip(), strict=False))


class InterfaceIn(_M):
    mac: str
    ips: list[str] = Field(default_factory=list)
    key: str | None = None
    network: str = ""
    subnet: str = ""
    device: str = ""

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str) -> str:
        return canonical_mac(v)

    @field_validator("ips", mode="before")
    @classmethod
    def _ips(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) else v
        return [canonical_ip(str(x)) for x in items or []]


class TopInterfaceIn(InterfaceIn):
    """An interface listed at top level (``vm``: the VM's key)."""

    vm: str = ""


class VMIn(_Named):
    project: str = ""
    host: str = ""
    state: str = ""
    tags: list[str] = Field(default_factory=list)
    interfaces: list[InterfaceIn] = Field(default_factory=list)


class NamespaceIn(_Named):
    pass


class NodeIn(_Named):
    address: str = ""


class PodIn(_Named):
    namespace: str = ""
    node: str = ""
    ip: str = ""
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        return canonical_ip(v) if v else v


class ServiceIn(_Named):
    namespace: str = ""
    cluster_ips: list[str] = Field(default_factory=list)
    ports: list[int] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)


class StaticFile(_M):
    """The YAML document."""

    valid_from: datetime | int | None = None
    taken_at: int | None = Field(None, description="ns since the epoch; same as valid_from")
    source: str | None = None
    regions: list[RegionIn] = Field(default_factory=list)
    zones: list[ZoneIn] = Field(default_factory=list)
    projects: list[ProjectIn] = Field(default_factory=list)
    hosts: list[HostIn] = Field(default_factory=list)
    networks: list[NetworkIn] = Field(default_factory=list)
    subnets: list[SubnetIn] = Field(default_factory=list)
    vms: list[VMIn] = Field(default_factory=list)
    interfaces: list[TopInterfaceIn] = Field(default_factory=list)
    namespaces: list[NamespaceIn] = Field(default_factory=list)
    nodes: list[NodeIn] = Field(default_factory=list)
    pods: list[PodIn] = Field(default_factory=list)
    services: list[ServiceIn] = Field(default_factory=list)


def _valid_from_ns(value: datetime | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        raise ConfigError("valid_from needs a time zone (e.g. 2026-11-20T00:00:00Z)")
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000


def _error_text(where: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {loc}: {msg}")
    more = len(exc.errors()) - 10
    return "\n".join(lines) + (f"\n... and {more} more" if more > 0 else "")


def _check_refs(snap: Snapshot, where: str) -> None:
    """Every reference names an entity of the file; keys are unique per kind."""
    keys: dict[str, set[str]] = {}
    problems: list[str] = []
    for kind, items in (
        ("region", snap.regions), ("zone", snap.zones), ("project", snap.projects), ("host", snap.hosts),
        ("network", snap.networks), ("subnet", snap.subnets), ("vm", snap.vms), ("interface", snap.interfaces),
        ("namespace", snap.namespaces), ("node", snap.nodes), ("pod", snap.pods), ("service", snap.services),
    ):  # fmt: skip
        seen: set[str] = set()
        for e in items:
            if e.key in seen:
                what = "MAC" if kind == "interface" else "key"
                problems.append(f"{kind} {what} {e.key!r} is used twice")
            seen.add(e.key)
        keys[kind] = seen
    refs = [
        ("zone", "region", "region"), ("project", "region", "region"), ("host", "zone", "zone"),
        ("host", "region", "region"), ("network", "project", "project"), ("subnet", "network", "network"),
        ("subnet", "project", "project"), ("vm", "project", "project"), ("vm", "host", "host"),
        ("interface", "network", "network"), ("interface", "subnet", "subnet"), ("interface", "vm", "vm"), ("pod", "namespace", "namespace"),
        ("pod", "node", "node"), ("service", "namespace", "namespace"),
    ]  # fmt: skip
    by_kind = {"zone": snap.zones, "project": snap.projects, "host": snap.hosts, "network": snap.networks,
               "subnet": snap.subnets, "vm": snap.vms, "interface": snap.interfaces, "pod": snap.pods,
               "service": snap.services}  # fmt: skip
    for kind, attr, target in refs:
        for e in by_kind[kind]:
            ref = getattr(e, attr)
            known = keys[target] | keys["pod"] if (kind, attr) == ("interface", "vm") else keys[target]
            if ref and ref not in known:
                problems.append(f"{kind} {e.key!r}: unknown {target} {ref!r}")
    if problems:
        shown = "\n".join(f"{where}: {p}" for p in problems[:10])
        more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ConfigError(shown + more)


def parse_static_yaml(text: str, where: str = "inventory", taken_at: int | None = None, source: str = NAME) -> Snapshot:
    """Parse the YAML static inventory.

    Raises:
        ConfigError: not YAML, unknown or invalid fields, duplicate keys, dangling references
            (each message names the file and the entry).
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with regions/projects/hosts/vms..., got {type(data).__name__}")
    try:
        doc = StaticFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_error_text(where, exc)) from None
    valid_from = _valid_from_ns(doc.valid_from if doc.valid_from is not None else doc.taken_at)
    snap = Snapshot(source=source, taken_at=taken_at if taken_at is not None else (valid_from or time.time_ns()))
    k = lambda e: e.key or e.name  # noqa: E731
    snap.regions = [Region(k(r), r.name) for r in doc.regions]
    snap.zones = [Zone(k(z), z.name, z.region) for z in doc.zones]
    snap.projects = [Project(k(p), p.name, p.region) for p in doc.projects]
    snap.hosts = [Host(k(h), h.name, h.zone, h.region, h.address) for h in doc.hosts]
    snap.networks = [Network(k(n), n.name, n.project, n.segment) for n in doc.networks]
    snap.subnets = [Subnet(k(s), s.name, s.cidr, s.network, s.project) for s in doc.subnets]
    for v in doc.vms:
        key = v.key or (f"{v.project}/{v.name}" if v.project else v.name)
        snap.vms.append(VM(key, v.name, v.project, v.host, v.state, tuple(v.tags)))
        for i in v.interfaces:
            snap.interfaces.append(
                Interface(i.key or i.mac, i.mac, tuple(i.ips), key, i.network, i.subnet, i.device)
            )
    for i in doc.interfaces:
        snap.interfaces.append(Interface(i.key or i.mac, i.mac, tuple(i.ips), i.vm, i.network, i.subnet, i.device))
    snap.namespaces = [Namespace(k(n), n.name) for n in doc.namespaces]
    snap.nodes = [Node(k(n), n.name, n.address) for n in doc.nodes]
    snap.pods = [Pod(k(p), p.name, p.namespace, p.node, p.ip, tuple(sorted(p.labels.items()))) for p in doc.pods]
    snap.services = [
        Service(k(s), s.name, s.namespace, tuple(canonical_ip(ip) for ip in s.cluster_ips), tuple(s.ports),
                tuple(sorted(s.selector.items())))
        for s in doc.services
    ]  # fmt: skip
    _check_refs(snap, where)
    return snap


def parse_static_csv(text: str, where: str = "inventory.csv", taken_at: int | None = None, source: str = NAME) -> Snapshot:
    """Parse the CSV static inventory (one row per VM interface).

    Raises:
        ConfigError: no header or no ``name`` column, unknown columns, bad values (naming the line).
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    if "name" not in header:
        raise ConfigError(f"{where}: the first line must be a header with at least a 'name' column")
    unknown = sorted(set(header) - set(CSV_COLUMNS))
    if unknown:
        raise ConfigError(f"{where}: unknown column(s) {unknown}; known: {', '.join(CSV_COLUMNS)}")
    reader.fieldnames = header
    snap = Snapshot(source=source, taken_at=taken_at if taken_at is not None else time.time_ns())
    implied: dict[str, dict[str, Any]] = {"project": {}, "host": {}, "network": {}, "subnet": {}, "region": {},
                                          "zone": {}}  # fmt: skip
    vms: dict[str, VM] = {}
    for line, row in enumerate(reader, start=2):
        r = {c: (row.get(c) or "").strip() for c in CSV_COLUMNS}
        if not r["name"]:
            raise ConfigError(f"{where} line {line}: 'name' is empty")
        try:
            ips = tuple(canonical_ip(x) for x in r["ip"].split(";") if x.strip())
            mac = canonical_mac(r["mac"]) if r["mac"] else ""
            segment = int(r["segment"]) if r["segment"] else None
            if segment is not None and not 0 <= segment <= 0xFFFFFF:
                raise ValueError(f"segment {segment} is not a VLAN id / VNI")
            cidr = str(ipaddress.ip_network(r["cidr"], strict=False)) if r["cidr"] else ""
        except ValueError as exc:
            raise ConfigError(f"{where} line {line}: {exc}") from None
        if (ips or r["network"] or r["subnet"]) and not mac:
            raise ConfigError(f"{where} line {line}: an interface needs a 'mac'")
        for kind in ("project", "host", "region", "zone"):
            if r[kind]:
                implied[kind].setdefault(r[kind], {"region": r["region"], "zone": r["zone"]})
        if r["network"]:
            old = implied["network"].get(r["network"])
            if old is not None and segment is not None and old["segment"] not in (None, segment):
                raise ConfigError(f"{where} line {line}: network {r['network']!r} has segments {old['segment']} and {segment}")
            if old is None or old["segment"] is None:
                implied["network"][r["network"]] = {"project": r["project"], "segment": segment}
        if r["subnet"] or cidr:
            if not (r["subnet"] and cidr) and r["subnet"] not in implied["subnet"]:
                raise ConfigError(f"{where} line {line}: give both 'subnet' and 'cidr' (the first time a subnet appears)")
            if cidr:
                name = r["subnet"] or cidr
                implied["subnet"].setdefault(name, {"cidr": cidr, "network": r["network"], "project": r["project"]})
        key = r["key"] or (f"{r['project']}/{r['name']}" if r["project"] else r["name"])
        tags = tuple(t.strip() for t in r["tags"].split(";") if t.strip())
        vm = VM(key, r["name"], r["project"], r["host"], r["state"], tags)
        if key in vms and vms[key] != vm:
            raise ConfigError(f"{where} line {line}: VM {key!r} is described differently on an earlier line")
        vms[key] = vm
        if mac:
            snap.interfaces.append(Interface(mac, mac, ips, key, r["network"], r["subnet"] or cidr, r["device"]))
    snap.vms = list(vms.values())
    snap.regions = [Region(n, n) for n in implied["region"]]
    snap.zones = [Zone(n, n, v["region"]) for n, v in implied["zone"].items()]
    snap.projects = [Project(n, n, v["region"]) for n, v in implied["project"].items()]
    snap.hosts = [Host(n, n, v["zone"], v["region"]) for n, v in implied["host"].items()]
    snap.networks = [Network(n, n, v["project"], v["segment"]) for n, v in implied["network"].items()]
    snap.subnets = [Subnet(n, n, v["cidr"], v["network"], v["project"]) for n, v in implied["subnet"].items()]
    _check_refs(snap, where)
    return snap


def load_static(path: str | Path, taken_at: int | None = None, source: str = NAME) -> Snapshot:
    """Read a static inventory file (``.yaml``/``.yml``/``.json`` or ``.csv``).

    Raises:
        ConfigError: unreadable, unknown extension, or invalid content (naming file and entry).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the static inventory {p}: {exc.strerror or exc}") from None
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return parse_static_csv(text, str(p), taken_at, source)
    if suffix in (".yaml", ".yml", ".json"):
        return parse_static_yaml(text, str(p), taken_at, source)
    raise ConfigError(f"{p}: a static inventory is a .yaml, .yml, .json or .csv file")


class StaticConnector:
    """The static file as a connector (re-read at every sync, so edits are picked up)."""

    def __init__(self, path: str | Path, name: str = NAME) -> None:
        self.path = Path(path)
        self.name = name

    def fetch(self) -> Snapshot:
        """The file's content now (``taken_at``: its ``valid_from`` or the time of reading)."""
        return load_static(self.path, source=self.name)
