"""ServerSettings: the server's typed configuration, from YAML with environment overrides.

Load order: defaults < YAML file < environment (``CLOUDTAP_SERVER__<SECTION>__<KEY>``, values parsed
as YAML scalars). Built by :func:`load_server_settings`, never at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloudtap.config_loader import load_layered
from cloudtap.inventory.connectors.kubernetes import KubernetesConfig
from cloudtap.inventory.connectors.openstack import OpenStackConfig
from cloudtap.inventory.connectors.vsphere import VSphereConfig
from cloudtap.server.findings.config import FindingsSection

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
    retention_days: float | None = Field(
        None, gt=0, description="upper bound on every flow/metric table's TTL: no row is kept longer than this many "
        "days after it was ingested; none = the per-table TTLs (ttl_days) only"
    )
    ttl_days: dict[str, float | None] = Field(
        default_factory=dict, description="TTL per table, days since ingest (null = keep forever); tables not named "
        "keep their defaults: flow_log/request_log 7, edge_1s/endpoint_1s/request_1s 2, edge_1m/endpoint_1m/request_1m "
        "30, edge_1h/endpoint_1h/request_1h 400, ingest_log 30"
    )
    max_disk_gib: float = Field(0, ge=0, description="drop the oldest partitions beyond this size; 0 = no limit")
    housekeeping_s: float = Field(
        300.0, gt=0, description="enforce the disk budget this often (seconds); TTLs are applied by ClickHouse merges"
    )

    @field_validator("ttl_days")
    @classmethod
    def _known_tables(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        if value:
            from cloudtap.server.store.retention import DEFAULT_TTL_DAYS

            unknown = sorted(set(value) - set(DEFAULT_TTL_DAYS))
            if unknown:
                raise ValueError(f"unknown table(s) {unknown}; known: {sorted(DEFAULT_TTL_DAYS)}")
            bad = sorted(k for k, v in value.items() if v is not None and v <= 0)
            if bad:
                raise ValueError(f"TTL of {bad} must be positive days or null")
        return value


class ApiSection(_Section):
    """The HTTP API."""

    listen: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8470, ge=0, le=65535, description="port (0 = pick a free one)")
    agent_token: str | None = Field(
        None, exclude=True, deprecated="removed: agents ship with their own credential (controller.token)",
        description="removed: agents ship with their own credential from registration (controller.token)",
    )  # fmt: skip
    max_batch_mib: int = Field(64, ge=1, description="largest ingest batch accepted")
    status_file: Path | None = Field(None, description="write the bound URL here once listening")
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) to serve HTTPS with; needs tls_key (`cloudtap server certs` makes both)"
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")

    @field_validator("agent_token")
    @classmethod
    def _no_shared_agent_token(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                "api.agent_token was never checked and is gone: agents register with controller.token and then "
                "ship with their own credential; move the token to controller.token"
            )
        return None

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both (HTTPS) or neither (HTTP)")
        return self

    @property
    def tls(self) -> bool:
        """True when the API serves HTTPS."""
        return self.tls_cert is not None


class IngestSection(_Section):
    """The ingest path: coalescing of agents' batches into few large inserts (see docs/shipping.md)."""

    coalesce_ms: float = Field(
        50.0, ge=0, le=10_000, description="batches arriving within this window are inserted as one block per table; 0 = one insert per batch"
    )
    max_group_batches: int = Field(1000, ge=1, description="at most this many batches in one coalesced insert")
    decode_threads: int = Field(
        2, ge=1, le=64, description="threads decompressing and checking a coalesced group's batches (Arrow releases the GIL)"
    )
    max_group_rows: int = Field(2_000_000, ge=1, description="at most this many rows (all kinds) in one coalesced insert")
    thread_nice: int = Field(
        5, ge=0, le=19, description="the decode and insert threads run this much nicer than the event loop, so heartbeats "
        "and command polls get a CPU first when ingest saturates the host; 0 = same priority"
    )
    max_pending_batches: int = Field(
        2000, ge=0, description="answer 429 (Retry-After) to new batches while this many wait to be stored; 0 = no limit"
    )
    wal_dir: Path | None = Field(
        None, description="write-ahead files of coalesced inserts; default <chDB data dir>/ingest-wal or /var/lib/cloudtap/"
    )


class ControllerSection(_Section):
    """Agents under the controller: registration, heartbeats, groups, policies (see docs/controller.md)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # tokens and database URLs stay out

    token: str | None = Field(
        None, description="shared bootstrap token, only for registration (each agent then gets its own credential); "
        "none (and no agent_tokens) = open registration, for a lab only (warned at start)"
    )
    agent_tokens: dict[str, str] = Field(
        default_factory=dict, description="per-agent bootstrap tokens: agent name or host name -> token (wins over "
        "the shared one)"
    )
    control_networks: list[str] = Field(
        default_factory=list, description="CIDRs (or exact host names) an agent's control URL may point to besides "
        "the address it connects from (NAT, proxies, a management network); other URLs are refused"
    )
    heartbeat_s: float = Field(10.0, gt=0, description="heartbeat period proposed to agents")
    stale_after: int = Field(3, ge=1, description="an agent is stale after this many missed heartbeat periods")
    sync_s: float = Field(30.0, gt=0, description="recompile policies against the inventory this often (when it changed)")
    db_path: Path | None = Field(
        None, description="controller state (SQLite); default <chDB data dir>/controller.sqlite or /var/lib/cloudtap/"
    )
    database_url: str | None = Field(
        None, description="PostgreSQL URL (postgresql://user:password@host:5432/db) of the controller state, shared "
        "by several server processes behind one address; none = SQLite at db_path. Set it by environment "
        "(CLOUDTAP_SERVER__CONTROLLER__DATABASE_URL): it holds a password; never logged"
    )
    inventory_file: Path | None = Field(
        None, description="static inventory snapshot (YAML/JSON) when no inventory service is configured"
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("database_url must be a postgresql:// URL (SQLite is db_path)")
        return value.strip()


class PcapSection(_Section):
    """PCAP retrieval from the agents' packet stores (see docs/packets.md)."""

    max_bytes: int = Field(1 << 30, ge=1024, description="largest pcapng one retrieval may return (larger: HTTP 413)")
    agent_timeout_s: float = Field(60.0, gt=0, description="time allowed to each agent to answer")
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


class OidcSection(_Section):
    """Single sign-on with an OpenID Connect provider (Keycloak, Dex, Keystone federation...)."""

    issuer: str = Field(description="the provider's issuer URL (its /.well-known/openid-configuration is read)")
    client_id: str = Field(description="this server's client id at the provider")
    client_secret: str | None = Field(None, description="client secret (confidential client); env override advised")
    redirect_url: str | None = Field(
        None, description="public URL of /api/v1/auth/oidc/callback; default from the request's own URL"
    )
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email", "groups"])
    username_claim: str = Field("preferred_username", description="claim that names the user")
    groups_claim: str = Field("groups", description="claim that lists the user's groups")
    group_roles: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="group -> role bindings, e.g. {net-admins: [{role: admin}], shop-ops: [{role: operator, "
        "projects: [shop]}]}; a user in no mapped group cannot log in",
    )
    ca_file: Path | None = Field(None, description="CA bundle to verify the provider's TLS certificate")
    label: str = Field("single sign-on", max_length=60, description="the console's button: 'Log in with <label>'")


class AuthSection(_Section):
    """Access control (docs/security.md): users, API tokens, browser sessions, single sign-on, audit."""

    enabled: bool = Field(
        True, description="require credentials on every non-public route; false is refused unless the API "
        "listens on loopback (development only)"
    )
    db_path: Path | None = Field(
        None, description="users, tokens, sessions (SQLite); default <chDB data dir>/access.sqlite or /var/lib/cloudtap/"
    )
    admin_user: str = Field("admin", description="name of the first admin, created at first start")
    admin_password_file: Path | None = Field(
        None, description="the first admin's password (else a random one is printed once)"
    )
    session_hours: float = Field(8.0, gt=0, le=24 * 30, description="browser session lifetime")
    token_days: float = Field(90.0, gt=0, le=3650, description="default API token lifetime")
    cookie_secure: bool | None = Field(None, description="Secure cookies; default: when the API serves TLS")
    metrics_token: str | None = Field(
        None, description="static bearer token for Prometheus scrapes of /metrics (else a user token with "
        "metrics:read)"
    )
    max_json_kib: int = Field(1024, ge=16, description="largest JSON request body accepted (ingest has its own)")
    audit_log: Path | None = Field(
        None, description="append-only JSONL audit log; default <chDB data dir>/audit.jsonl or /var/lib/cloudtap/"
    )
    audit_max_mib: float = Field(64.0, gt=0, description="rotate the audit log at this size")
    audit_keep: int = Field(20, ge=1, description="rotated audit files kept")
    oidc: OidcSection | None = Field(None, description="single sign-on; none = local users only")


class ServerSettings(_Section):
    """Everything the server reads at start."""

    storage: StorageSection = Field(default_factory=StorageSection)
    api: ApiSection = Field(default_factory=ApiSection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    inventory: InventorySection = Field(default_factory=InventorySection)
    pcap: PcapSection = Field(default_factory=PcapSection)
    controller: ControllerSection = Field(default_factory=ControllerSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    findings: FindingsSection = Field(default_factory=FindingsSection)


def load_server_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ServerSettings:
    """Build server settings from a YAML file (optional) and the environment; ConfigError names the bad key."""
    return load_layered(ServerSettings, path, env, ENV_PREFIX, "server config")
