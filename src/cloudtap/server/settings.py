"""ServerSettings: the server's typed configuration, from YAML with environment overrides.

Load order: defaults < YAML file < environment (``CLOUDTAP_SERVER__<SECTION>__<KEY>``, values parsed
as YAML scalars). Built by :func:`load_server_settings`, never at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cloudtap.config_loader import load_layered
from cloudtap.inventory.connectors.kubernetes import KubernetesConfig
from cloudtap.inventory.connectors.openstack import OpenStackConfig
from cloudtap.inventory.connectors.vsphere import VSphereConfig

ENV_PREFIX = "CLOUDTAP_SERVER__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageSection(_Section):
    """Where flows are stored."""

    dsn: str = Field(
        "chdb:///var/lib/cloudtap/chdb",
        description="chdb:///ABS/PATH (embedded, default) or http(s)://user:pass@host:8123 (ClickHouse server)",
    )
    database: str = Field("cloudtap", description="ClickHouse database name")
    cluster: str | None = Field(None, description="ClickHouse cluster name: ON CLUSTER DDL, local + Distributed tables")
    retention_days: int = Field(30, ge=1, description="drop rows this many days after they were ingested")
    max_disk_gib: float = Field(0, ge=0, description="drop the oldest partitions beyond this size; 0 = no limit")


class ApiSection(_Section):
    """The HTTP API."""

    listen: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8470, ge=0, le=65535, description="port (0 = pick a free one)")
    agent_token: str | None = Field(None, description="shared token agents must send (X-Cloudtap-Token); none = open")
    max_batch_mib: int = Field(64, ge=1, description="largest ingest batch accepted")
    status_file: Path | None = Field(None, description="write the bound URL here once listening")


class IngestSection(_Section):
    """The ingest path: coalescing of agents' batches into few large inserts (see docs/shipping.md)."""

    coalesce_ms: float = Field(
        50.0, ge=0, le=10_000, description="batches arriving within this window are inserted as one block per table; 0 = one insert per batch"
    )
    max_group_batches: int = Field(1000, ge=1, description="at most this many batches in one coalesced insert")
    max_group_rows: int = Field(2_000_000, ge=1, description="at most this many rows (all kinds) in one coalesced insert")
    wal_dir: Path | None = Field(
        None, description="write-ahead files of coalesced inserts; default <chDB data dir>/ingest-wal or /var/lib/cloudtap/"
    )


class ControllerSection(_Section):
    """Agents under the controller: registration, heartbeats, groups, policies (see docs/controller.md)."""

    token: str | None = Field(None, description="shared registration token; none (and no agent_tokens) = open registration")
    agent_tokens: dict[str, str] = Field(
        default_factory=dict, description="per-agent tokens: agent name or host name -> token (wins over the shared one)"
    )
    heartbeat_s: float = Field(10.0, gt=0, description="heartbeat period proposed to agents")
    stale_after: int = Field(3, ge=1, description="an agent is stale after this many missed heartbeat periods")
    sync_s: float = Field(30.0, gt=0, description="recompile policies against the inventory this often (when it changed)")
    db_path: Path | None = Field(
        None, description="controller state (SQLite); default <chDB data dir>/controller.sqlite or /var/lib/cloudtap/"
    )
    inventory_file: Path | None = Field(
        None, description="static inventory snapshot (YAML/JSON) when no inventory service is configured"
    )


class PcapSection(_Section):
    """PCAP retrieval from the agents' packet stores (see docs/packets.md)."""

    max_bytes: int = Field(1 << 30, ge=1024, description="largest pcapng one retrieval may return (larger: HTTP 413)")
    agent_timeout_s: float = Field(60.0, gt=0, description="time allowed to each agent to answer")
    audit_log: Path | None = Field(
        None, description="JSONL audit log of retrievals; default <chDB data dir>/pcap-audit.jsonl or /var/lib/cloudtap/"
    )
    spool_directory: Path | None = Field(None, description="where agent answers wait while merging; default: system temp")


class InventorySection(_Section):
    """The cloud inventory (docs/inventory.md): connectors, sync, tagging of flows at ingest.

    Platform connectors add their own sub-sections (``openstack``, ``vsphere``, ``kubernetes``).
    """

    enabled: bool = Field(True, description="keep an inventory and tag flows with cloud ids at ingest (hot: no)")
    static_file: Path | None = Field(None, description="static inventory file (.yaml/.csv); re-read at every sync")
    sync_period_s: float = Field(60.0, ge=1, description="seconds between syncs of every connector")
    backdate_first_sync: bool = Field(
        True, description="a source's first snapshot counts as true since ever (tags captures older than it)"
    )
    learn_from_agents: bool = Field(
        True, description="build the inventory from agents' reports when no cloud API connector is configured"
    )
    openstack: list[OpenStackConfig] = Field(
        default_factory=list, description="OpenStack clouds (Keystone/Nova/Neutron), one entry per region"
    )
    vsphere: list[VSphereConfig] = Field(default_factory=list, description="vCenter servers")
    kubernetes: list[KubernetesConfig] = Field(default_factory=list, description="Kubernetes clusters")


class ServerSettings(_Section):
    """Everything the server reads at start."""

    storage: StorageSection = Field(default_factory=StorageSection)
    api: ApiSection = Field(default_factory=ApiSection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    inventory: InventorySection = Field(default_factory=InventorySection)
    pcap: PcapSection = Field(default_factory=PcapSection)
    controller: ControllerSection = Field(default_factory=ControllerSection)


def load_server_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ServerSettings:
    """Build server settings from a YAML file (optional) and the environment; ConfigError names the bad key."""
    return load_layered(ServerSettings, path, env, ENV_PREFIX, "server config")
