"""Incidents of a scenario: scheduled departures from normal traffic (backups and their contention,
bursts, port scans), as declared in the scenario YAML (see :mod:`cloudtap.synth.scenario`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from cloudtap.synth._units import Duration, Range
from cloudtap.synth._units import SpecModel as _Model


class _Schedule(_Model):
    """When an incident happens: ``at`` (offset) or ``at_minute`` past the hour, repeated ``every``."""

    name: str | None = None
    at: Duration = 0.0
    at_minute: float | None = Field(default=None, ge=0, lt=60 * 24)
    every: Duration | None = None

    @field_validator("every")
    @classmethod
    def _positive_every(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("'every' must be > 0")
        return value


class ContentionSpec(_Model):
    """While the push runs, exchanges of ``service`` with a server on the pushing VM's host (or
    matching ``servers``) take ``server_ms`` instead of the service's own server time."""

    service: str
    server_ms: Range
    servers: str | None = None


class BackupIncident(_Schedule):
    """One-way bulk TCP push from ``from_vm`` to ``to_vm`` (data one way, pure ACKs back)."""

    kind: Literal["backup"]
    from_vm: str
    to_vm: str
    duration: Duration = 180.0
    rate_mbps: float = Field(default=100.0, gt=0, le=100_000)
    port: int = Field(default=873, ge=1, le=65535)
    loss: float = Field(default=0.0005, ge=0, le=0.2)
    contention: list[ContentionSpec] = Field(default_factory=list)


class BurstIncident(_Schedule):
    """A service's session rate multiplied for ``duration``."""

    kind: Literal["burst"]
    service: str
    duration: Duration = 300.0
    multiplier: float = Field(default=10.0, gt=1, le=10_000)


class ScanIncident(_Schedule):
    """A TCP SYN scan from ``from_vm`` of ``targets`` x ``ports`` at ``rate_pps`` probes per second."""

    kind: Literal["scan"]
    from_vm: str
    targets: str
    ports: Range | list[int] = (1.0, 1024.0)
    rate_pps: float = Field(default=200.0, gt=0, le=1_000_000)
    filtered: float = Field(default=0.0, ge=0, le=1)

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else list(value)
        if not values or min(values) < 1 or max(values) > 65535:
            raise ValueError("ports must lie in 1..65535")
        return value


Incident = Annotated[BackupIncident | BurstIncident | ScanIncident, Field(discriminator="kind")]
