"""ServerSettings: the server's typed configuration, from YAML with environment overrides.

Load order: defaults < YAML file < environment (``CLOUDTAP_SERVER__<SECTION>__<KEY>``, values parsed
as YAML scalars). Built by :func:`load_server_settings`, never at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cloudtap.config_loader import load_layered

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


class ServerSettings(_Section):
    """Everything the server reads at start."""

    storage: StorageSection = Field(default_factory=StorageSection)
    api: ApiSection = Field(default_factory=ApiSection)


def load_server_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ServerSettings:
    """Build server settings from a YAML file (optional) and the environment; ConfigError names the bad key."""
    return load_layered(ServerSettings, path, env, ENV_PREFIX, "server config")
