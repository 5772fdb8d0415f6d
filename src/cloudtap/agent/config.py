"""AgentConfig: the agent's typed configuration, from YAML with environment overrides.

Load order: defaults < YAML file < environment. An environment variable
``CLOUDTAP_AGENT__<SECTION>__<KEY>=value`` overrides one key (``__`` separates levels; values are
parsed as YAML scalars, so ``1.5``, ``true`` and ``[a, b]`` work). Every key is documented by its
``description``; ``cloudtap agent config --defaults`` prints them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloudtap.agent.interfaces import DEFAULT_INTERFACE_PATTERN
from cloudtap.broker.config import BrokerSection
from cloudtap.config_loader import load_layered
from cloudtap.meter.config import MeterConfig

ENV_PREFIX = "CLOUDTAP_AGENT__"
#: ``json_schema_extra`` of keys a running agent applies at once when the controller changes them; every
#: other key is restart-required (the agent reports it and uses it from its next start).
HOT = {"apply": "hot"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaptureSection(_Section):
    """Which traffic to capture and how."""

    mode: Literal["interfaces", "mirror", "replay"] = Field(
        "interfaces", description="interfaces: VM ports via AF_PACKET; mirror: ERSPAN/GRE/VXLAN socket; replay: a file"
    )
    interface_pattern: str = Field(DEFAULT_INTERFACE_PATTERN, description="regex of VM interfaces to follow live")
    interfaces: list[str] = Field(
        default_factory=list, description="fixed interface names (besides the pattern)", json_schema_extra=HOT
    )
    bpf: str | None = Field(None, description="tcpdump filter, compiled by libpcap and attached in the kernel", json_schema_extra=HOT)
    snaplen: int = Field(256, ge=64, le=65535, description="bytes kept per packet (headers only by default)")
    ring_block_size: int = Field(1 << 20, ge=4096, description="TPACKET_V3 block size (bytes)")
    ring_block_count: int = Field(32, ge=2, description="TPACKET_V3 blocks per ring")
    workers: int = Field(1, ge=1, le=64, description="capture workers; >1 uses PACKET_FANOUT (hash)")
    mirror_kind: Literal["vxlan", "gre"] = Field("vxlan", description="mirror mode: socket kind")
    mirror_bind: str = Field("0.0.0.0", description="mirror mode: address to receive on")
    mirror_port: int = Field(4789, ge=1, le=65535, description="mirror mode: VXLAN UDP port")
    mirror_dedup_ms: float = Field(50.0, ge=0, description="mirror mode: drop copies seen again within this window")
    replay_file: Path | None = Field(None, description="replay mode: the capture file")
    replay_speed: float | None = Field(None, gt=0, description="replay mode: 1.0 recorded pace, 10 = 10x, none = max")
    replay_stay: bool = Field(
        False, description="replay mode: keep running after the file ends (control endpoint, packet store, controller)"
    )
    libvirt_dirs: list[Path] = Field(
        default_factory=lambda: [Path("/run/libvirt/qemu"), Path("/etc/libvirt/qemu")],
        description="where libvirt domain XML lives (VM identity of tap interfaces)",
    )


class MirrorTarget(_Section):
    """The VM port(s) behind one mirror session, VNI or VLAN."""

    name: str = Field("", description="observation point label in records (interface_name); default: the key")
    vms: dict[str, str] = Field(
        default_factory=dict, description="VM MAC -> VM name of the mirrored ports (records' vm_mac / vm_domain)"
    )

    @field_validator("vms")
    @classmethod
    def _macs(cls, value: dict[str, str]) -> dict[str, str]:
        from cloudtap.agent.mirror_attribution import mac_text, parse_mac

        return {mac_text(parse_mac(mac)): name for mac, name in value.items()}


class MirrorSection(_Section):
    """Mirror mode: which VM each mirrored copy belongs to (docs/flow-semantics.md, "Mirrored traffic")."""

    sessions: dict[str, MirrorTarget] = Field(
        default_factory=dict,
        description="'session:N' (ERSPAN session id / GRE key), 'vni:N' (VXLAN/Geneve), 'vlan:N' (inner VLAN) or "
        "'N' (any tunnel id) -> {name, vms: {mac: vm name}}; unmatched copies are attributed by inner MAC",
    )

    @field_validator("sessions")
    @classmethod
    def _keys(cls, value: dict[str, MirrorTarget]) -> dict[str, MirrorTarget]:
        from cloudtap.agent.mirror_attribution import parse_key

        for key in value:
            parse_key(key)
        return value


class LimitsSection(_Section):
    """The resources the user grants the agent."""

    max_cpu_cores: float = Field(1.0, gt=0, description="CPU the agent may use (cores, e.g. 0.5)", json_schema_extra=HOT)
    max_memory_mib: int = Field(512, ge=64, description="memory the agent may use (MiB, incl. rings)")
    max_pps: int = Field(0, ge=0, description="packets per second the agent processes; 0 = no cap", json_schema_extra=HOT)
    use_cgroup: bool = Field(True, description="put the agent in a cgroup v2 with these limits when possible")


class BreakersSection(_Section):
    """Circuit breakers: pause capture when the host is in trouble, resume when healthy."""

    max_load_per_core: float = Field(4.0, gt=0, description="trip when 1-min load average / cores exceeds this", json_schema_extra=HOT)
    min_free_memory_mib: int = Field(256, ge=0, description="trip when MemAvailable drops below this", json_schema_extra=HOT)
    min_free_disk_mib: int = Field(512, ge=0, description="trip when the output disk has less free than this", json_schema_extra=HOT)
    hysteresis: float = Field(0.1, ge=0, le=0.9, description="resume only 10% inside the threshold", json_schema_extra=HOT)
    hold_s: float = Field(5.0, ge=0, description="stay tripped at least this long", json_schema_extra=HOT)


class IpfixTarget(_Section):
    """One IPFIX collector that receives every flow record too (docs/ipfix.md)."""

    url: str = Field(description="collector: udp://host:port or tcp://host:port")
    mtu: int | None = Field(
        None, ge=640, le=65535, description="largest IPFIX message in bytes (default 1400 on UDP, 16384 on TCP)"
    )
    template_refresh_s: float = Field(60.0, gt=0, description="UDP: re-send the templates at least this often")
    template_refresh_messages: int = Field(
        100, ge=0, description="UDP: re-send the templates every N messages (0: by time only)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from cloudtap.errors import ConfigError
        from cloudtap.ship.ipfix.transport import parse_target

        try:
            return parse_target(value).url
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc


class OutputSection(_Section):
    """Where records go."""

    sink: Literal["file", "server"] = Field("file", description="file: rotated local files; server: ship to server_url")
    server_url: str = Field("http://127.0.0.1:8470", description="server sink: the cloudtap server")
    server_token: str | None = Field(
        None, description="deprecated: the server sink sends the credential issued at registration; a value here is "
        "used as controller.token when that is unset"
    )
    spool_directory: Path = Field(
        Path("/var/lib/cloudtap/spool"), description="server sink: batches wait here while the server is unreachable"
    )
    spool_max_mib: int = Field(1024, ge=1, description="server sink: spool bound; beyond it the oldest batches are dropped (counted)")
    flush_interval_s: float = Field(1.0, gt=0, description="server sink: ship buffered records this often", json_schema_extra=HOT)
    directory: Path = Field(Path("/var/lib/cloudtap/records"), description="output directory of the file sink")
    format: Literal["jsonl", "parquet"] = Field("parquet", description="file format of flow and edge records")
    rotate_s: float = Field(60.0, gt=0, description="start a new file every N seconds")
    keep_files: int = Field(1440, ge=1, description="oldest files are deleted beyond this many per kind")
    edge_intervals_s: list[float] = Field(default_factory=lambda: [1.0, 60.0], description="edge metric intervals")
    ipfix: list[IpfixTarget] = Field(
        default_factory=list,
        description="IPFIX collectors that also get every flow record, beside the sink: [{url: udp://host:port or "
        "tcp://host:port, mtu, template_refresh_s, template_refresh_messages}] (restart-required; docs/ipfix.md)",
    )


class ControlSection(_Section):
    """Local control and monitoring endpoint (docs/controller.md: every call but /health needs the control key)."""

    listen: str = Field("127.0.0.1", description="address of the control/metrics HTTP endpoint")
    port: int = Field(9477, ge=0, le=65535, description="port (0 = pick a free one)")
    status_file: Path | None = Field(None, description="write the bound address here (for `agent status`)")
    key_file: Path | None = Field(
        None, description="file holding a key callers of the TCP endpoint must send as 'Authorization: Bearer' (at "
        "least 16 characters); under a controller the key it issues works too. Standalone without it, only the "
        "Unix socket is served"
    )
    socket: Path | None = Field(
        Path("/run/cloudtap/agent.sock"), description="Unix socket for local administration (mode 0600: its owner "
        "and root only; no key needed); none = off"
    )
    advertise_url: str | None = Field(
        None,
        description="URL the server uses to reach this endpoint (PCAP retrieval); default: from `listen` and the "
        "bound port (listen 0.0.0.0/::: this host's address toward the controller)",
    )


class ControllerSection(_Section):
    """The central controller (server) this agent registers with; off while ``url`` is empty."""

    url: str | None = Field(None, description="controller (cloudtap server) URL, e.g. http://10.0.0.5:8470; none = standalone")
    token: str | None = Field(
        None, description="bootstrap token (shared or per-agent), only to register: every later call (and shipping) "
        "uses the agent's own credential"
    )
    heartbeat_s: float = Field(10.0, gt=0, description="heartbeat period; config changes arrive within one period")
    group: str = Field("default", description="agent group whose config overlay this agent receives")
    host_name: str = Field("", description="host name reported to the controller (default: the system host name)")
    cache_file: Path = Field(
        Path("/var/lib/cloudtap/controller-config.json"),
        description="last config received from the controller; used at start while the controller is unreachable",
    )
    credential_file: Path = Field(
        Path("/var/lib/cloudtap/agent-credential.json"),
        description="the credential and control key the controller issued at registration (written 0600)",
    )


class PolicyFilterEntry(_Section):
    """One policy's part of the capture filter (``policy.filters``; docs/controller.md, "Payload per policy")."""

    policy: str = Field("", description="the policy's name")
    select: str = Field("", description="the VMs it selects, as a filter (ether host ... or host ...)")
    bpf: str | None = Field(None, description="the policy's own filter, ANDed with select")
    snaplen: int | None = Field(None, ge=1, le=65535, description="bytes kept per packet (none: capture.snaplen)")
    requests: bool = Field(False, description="parse application requests in the packets it keeps")
    payload_bytes: int = Field(0, ge=0, description="bytes of L4 payload the policy keeps (0: headers only)")


class PolicySection(_Section):
    """What the controller's policies compiled for this host (set by the controller, not by hand)."""

    active: bool = Field(False, description="a policy applies: capture only what it selects", json_schema_extra=HOT)
    capture: bool = Field(True, description="false: no VM on this host is selected, capture pauses", json_schema_extra=HOT)
    interfaces: list[str] = Field(default_factory=list, description="VM interfaces selected", json_schema_extra=HOT)
    macs: list[str] = Field(default_factory=list, description="VM MACs selected", json_schema_extra=HOT)
    bpf: str | None = Field(None, description="filter selecting those VMs (and the policies' filters)", json_schema_extra=HOT)
    snaplen: int | None = Field(None, ge=64, le=65535, description="snap length the policies ask for")
    store_packets: bool = Field(False, description="keep packets of the selected VMs for PCAP retrieval", json_schema_extra=HOT)
    policies: list[str] = Field(default_factory=list, description="names of the policies in force", json_schema_extra=HOT)
    filters: list[PolicyFilterEntry] = Field(
        default_factory=list, description="per policy: selection, filter, snap length, requests (tried in turn)",
        json_schema_extra=HOT,
    )  # fmt: skip


class PacketsSection(_Section):
    """Rolling packet store on local disk, for PCAP retrieval (see docs/packets.md)."""

    enabled: bool = Field(False, description="keep the captured packets on local disk", json_schema_extra=HOT)
    directory: Path = Field(Path("/var/lib/cloudtap/packets"), description="where the packet segments live")
    max_disk_mib: int = Field(1024, ge=1, description="disk budget; the oldest segments are deleted beyond it", json_schema_extra=HOT)
    snaplen: int = Field(256, ge=16, le=65535, description="bytes kept per stored packet", json_schema_extra=HOT)
    interfaces: list[str] = Field(
        default_factory=lambda: ["*"], description="globs of interfaces (or VM domains) whose packets are kept", json_schema_extra=HOT
    )
    block_kib: int = Field(1024, ge=16, le=65536, description="packet bytes per indexed block")
    max_pending_mib: int = Field(32, ge=1, description="blocks waiting for the disk beyond this are dropped (counted)")


class RequestsSection(_Section):
    """Application requests parsed from the captured payload and shipped as kind ``requests`` (docs/requests.md,
    "In the agent"). Restart-required: every key is read when the capture workers are built."""

    enabled: bool = Field(False, description="parse HTTP/DNS/MySQL/PostgreSQL/Redis requests; flows carry their counts")
    protocols: list[Literal["http", "dns", "mysql", "pgsql", "redis"]] = Field(
        default_factory=lambda: ["http", "dns", "mysql", "pgsql", "redis"], description="protocols parsed"
    )
    queue: int = Field(8, ge=1, le=255, description="pending requests per flow (pipelining depth)")
    timeout_s: float = Field(30.0, gt=0, description="a request without response for this long is a timeout")
    max_flows: int = Field(
        16384, ge=16, le=1 << 24, description="flows tracked per capture worker (memory: ~3.7 KiB each, budgeted)"
    )


class AgentConfig(_Section):
    """Everything the agent reads at start."""

    agent_id: str = Field("", description="name of this agent (default: the host name)")
    capture: CaptureSection = Field(default_factory=CaptureSection)
    mirror: MirrorSection = Field(default_factory=MirrorSection)
    meter: MeterConfig = Field(default_factory=lambda: MeterConfig(max_flows=1 << 18, key_by_interface=True))
    limits: LimitsSection = Field(default_factory=LimitsSection)
    breakers: BreakersSection = Field(default_factory=BreakersSection)
    output: OutputSection = Field(default_factory=OutputSection)
    control: ControlSection = Field(default_factory=ControlSection)
    packets: PacketsSection = Field(default_factory=PacketsSection)
    controller: ControllerSection = Field(default_factory=ControllerSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    broker: BrokerSection = Field(default_factory=BrokerSection, json_schema_extra=HOT)  # docs/broker.md
    requests: RequestsSection = Field(default_factory=RequestsSection)  # docs/requests.md


def load_agent_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Build the agent config from a YAML file (optional) and environment overrides.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, or a value is invalid; the
            message names the key.
    """
    return load_layered(AgentConfig, path, env, ENV_PREFIX, "agent config")


def documented_defaults() -> str:
    """The default configuration as commented YAML: every key with its description."""
    lines: list[str] = []

    def walk(model: type[BaseModel], instance: BaseModel, indent: int) -> None:
        for name, field in model.model_fields.items():
            value = getattr(instance, name)
            pad = "  " * indent
            if field.description:
                lines.append(f"{pad}# {field.description}")
            if isinstance(value, BaseModel):
                lines.append(f"{pad}{name}:")
                walk(type(value), value, indent + 1)
            else:
                dumped = yaml.safe_dump({name: _plain(value)}, default_flow_style=True, width=1000).strip()
                lines.append(f"{pad}{dumped[1:-1] if dumped.startswith('{') else dumped}")  # {} values stay

    walk(AgentConfig, AgentConfig(), 0)
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
