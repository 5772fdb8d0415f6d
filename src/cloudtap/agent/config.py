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
from pydantic import BaseModel, ConfigDict, Field

from cloudtap.agent.interfaces import DEFAULT_INTERFACE_PATTERN
from cloudtap.config_loader import load_layered
from cloudtap.meter.config import MeterConfig

ENV_PREFIX = "CLOUDTAP_AGENT__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaptureSection(_Section):
    """Which traffic to capture and how."""

    mode: Literal["interfaces", "mirror", "replay"] = Field(
        "interfaces", description="interfaces: VM ports via AF_PACKET; mirror: ERSPAN/GRE/VXLAN socket; replay: a file"
    )
    interface_pattern: str = Field(DEFAULT_INTERFACE_PATTERN, description="regex of VM interfaces to follow live")
    interfaces: list[str] = Field(default_factory=list, description="fixed interface names (besides the pattern)")
    bpf: str | None = Field(None, description="tcpdump filter, compiled by libpcap and attached in the kernel")
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
    libvirt_dirs: list[Path] = Field(
        default_factory=lambda: [Path("/run/libvirt/qemu"), Path("/etc/libvirt/qemu")],
        description="where libvirt domain XML lives (VM identity of tap interfaces)",
    )


class LimitsSection(_Section):
    """The resources the user grants the agent."""

    max_cpu_cores: float = Field(1.0, gt=0, description="CPU the agent may use (cores, e.g. 0.5)")
    max_memory_mib: int = Field(512, ge=64, description="memory the agent may use (MiB, incl. rings)")
    max_pps: int = Field(0, ge=0, description="packets per second the agent processes; 0 = no cap")
    use_cgroup: bool = Field(True, description="put the agent in a cgroup v2 with these limits when possible")


class BreakersSection(_Section):
    """Circuit breakers: pause capture when the host is in trouble, resume when healthy."""

    max_load_per_core: float = Field(4.0, gt=0, description="trip when 1-min load average / cores exceeds this")
    min_free_memory_mib: int = Field(256, ge=0, description="trip when MemAvailable drops below this")
    min_free_disk_mib: int = Field(512, ge=0, description="trip when the output disk has less free than this")
    hysteresis: float = Field(0.1, ge=0, le=0.9, description="resume only 10% inside the threshold")
    hold_s: float = Field(5.0, ge=0, description="stay tripped at least this long")


class OutputSection(_Section):
    """Where records go."""

    sink: Literal["file", "server"] = Field("file", description="file: rotated local files; server: ship to server_url")
    server_url: str = Field("http://127.0.0.1:8470", description="server sink: the cloudtap server")
    server_token: str | None = Field(None, description="server sink: shared agent token (X-Cloudtap-Token)")
    spool_directory: Path = Field(
        Path("/var/lib/cloudtap/spool"), description="server sink: batches wait here while the server is unreachable"
    )
    spool_max_mib: int = Field(1024, ge=1, description="server sink: spool bound; beyond it the oldest batches are dropped (counted)")
    flush_interval_s: float = Field(1.0, gt=0, description="server sink: ship buffered records this often")
    directory: Path = Field(Path("/var/lib/cloudtap/records"), description="output directory of the file sink")
    format: Literal["jsonl", "parquet"] = Field("parquet", description="file format of flow and edge records")
    rotate_s: float = Field(60.0, gt=0, description="start a new file every N seconds")
    keep_files: int = Field(1440, ge=1, description="oldest files are deleted beyond this many per kind")
    edge_intervals_s: list[float] = Field(default_factory=lambda: [1.0, 60.0], description="edge metric intervals")


class ControlSection(_Section):
    """Local control and monitoring endpoint."""

    listen: str = Field("127.0.0.1", description="address of the control/metrics HTTP endpoint")
    port: int = Field(9477, ge=0, le=65535, description="port (0 = pick a free one)")
    status_file: Path | None = Field(None, description="write the bound address here (for `agent status`)")


class AgentConfig(_Section):
    """Everything the agent reads at start."""

    agent_id: str = Field("", description="name of this agent (default: the host name)")
    capture: CaptureSection = Field(default_factory=CaptureSection)
    meter: MeterConfig = Field(default_factory=lambda: MeterConfig(max_flows=1 << 18, key_by_interface=True))
    limits: LimitsSection = Field(default_factory=LimitsSection)
    breakers: BreakersSection = Field(default_factory=BreakersSection)
    output: OutputSection = Field(default_factory=OutputSection)
    control: ControlSection = Field(default_factory=ControlSection)


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
                lines.append(f"{pad}{dumped.strip('{}')}")

    walk(AgentConfig, AgentConfig(), 0)
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
