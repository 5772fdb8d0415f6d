"""The scenario: a declarative description of a private cloud and the traffic it carries.

A scenario names projects (tenants) with VMs placed on hypervisor hosts, services (who talks to
whom, on which port, how often, how much), fault rates, and incidents (hourly backups, bursts,
port scans). :func:`load_scenario` reads one from YAML; :func:`builtin_scenario` returns the
scenarios shipped in ``cloudtap/synth/scenarios``.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from cloudtap.errors import ConfigError
from cloudtap.synth._units import Duration, Range
from cloudtap.synth._units import SpecModel as _Model
from cloudtap.synth.incident_specs import (
    BackupIncident,
    BurstIncident,
    ContentionSpec,
    Incident,
    ScanIncident,
)

__all__ = [
    "BackupIncident", "BurstIncident", "CloudSpec", "ContentionSpec", "FaultSpec", "HostSpec", "Incident",
    "ProjectSpec", "RttSpec", "ScanIncident", "Scenario", "ServiceSpec", "VMSpec", "builtin_scenario",
    "load_scenario", "resolve_scenario", "scenario_from_dict", "with_overrides",
]  # fmt: skip

DEFAULT_START = datetime(2026, 11, 20, tzinfo=UTC)
BUILTIN_NAMES = ("small-cloud", "bench", "seed-case")


class HostSpec(_Model):
    """A hypervisor host. ``ip``/``mac`` default to the underlay's next free address."""

    name: str
    ip: ipaddress.IPv4Address | None = None
    mac: str | None = None


class VMSpec(_Model):
    """One VM, or ``count`` VMs named ``<role>-01``, ``<role>-02``..."""

    role: str
    name: str | None = None
    count: int = Field(default=1, ge=1, le=4000)
    host: str | None = None
    ip: ipaddress.IPv4Address | None = None

    @model_validator(mode="after")
    def _single_when_named(self) -> VMSpec:
        if self.count > 1 and (self.name is not None or self.ip is not None):
            raise ValueError("'name' and 'ip' apply to one VM: drop them or use count: 1")
        return self


class ProjectSpec(_Model):
    """A tenant: a subnet, a VXLAN VNI (GRE key / ERSPAN session), an optional VLAN, its VMs."""

    name: str
    subnet: ipaddress.IPv4Network | None = None
    vni: int | None = Field(default=None, ge=1, le=0xFFFFFF)
    vlan: int = Field(default=0, ge=0, le=4094)
    vms: list[VMSpec] = Field(min_length=1)


class CloudSpec(_Model):
    """Hosts and projects. ``hosts`` is a count (named hv-01...) or a list."""

    underlay: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/24")
    collector_ip: ipaddress.IPv4Address | None = None
    hosts: int | list[HostSpec] = 4
    projects: list[ProjectSpec] = Field(min_length=1)

    @field_validator("hosts")
    @classmethod
    def _some_hosts(cls, value: int | list[HostSpec]) -> int | list[HostSpec]:
        if isinstance(value, int) and not 1 <= value <= 1000:
            raise ValueError("hosts must be between 1 and 1000")
        if isinstance(value, list) and not value:
            raise ValueError("at least one host is needed")
        return value


class FaultSpec(_Model):
    """Fault rates; a service's own ``faults`` override the scenario's field by field."""

    loss: float | None = Field(default=None, ge=0, le=0.2)
    zero_window: float | None = Field(default=None, ge=0, le=1)
    client_rst: float | None = Field(default=None, ge=0, le=1)
    server_rst: float | None = Field(default=None, ge=0, le=1)
    refused: float | None = Field(default=None, ge=0, le=1)
    unanswered: float | None = Field(default=None, ge=0, le=1)
    syn_retries: Range | None = None
    close_by_server: float | None = Field(default=None, ge=0, le=1)

    @field_validator("syn_retries")
    @classmethod
    def _retry_count(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and (value[0] < 0 or value[1] > 8):
            raise ValueError("syn_retries must lie within 0..8")
        return value


#: What an unset fault field means.
FAULT_DEFAULTS: dict[str, Any] = {
    "loss": 0.002,
    "zero_window": 0.01,
    "client_rst": 0.02,
    "server_rst": 0.01,
    "refused": 0.005,
    "unanswered": 0.003,
    "syn_retries": (1.0, 3.0),
    "close_by_server": 0.3,
}


class RttSpec(_Model):
    """Handshake half-RTTs seen from the tap, in microseconds (at least 1)."""

    server_us: Range = (50.0, 500.0)
    client_us: Range = (20.0, 200.0)

    @field_validator("server_us", "client_us")
    @classmethod
    def _positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] < 1 or value[1] > 10_000_000:
            raise ValueError("half-RTTs must lie between 1 us and 10 s")
        return value


class ServiceSpec(_Model):
    """Sessions from ``clients`` to ``servers`` with Poisson arrivals at ``rate`` per second.

    Selectors are ``project/role`` (``*`` wildcards; the part after ``/`` also matches VM names),
    a bare ``role``, or ``*``. ``requests`` is exchanges per connection (echo requests for ICMP,
    whose payload is ``request_bytes``' low end and whose interval is ``think_ms``, default 1 s).
    ``app`` makes payloads real protocol messages (``templates``: statements, ``METHOD /path``,
    Redis commands, ``TYPE name`` queries; ``{n}`` is a number varied per request; ``errors``: share
    of error replies); without it payloads are zero bytes: avoid ports whose Wireshark dissector
    rejects them (3306, 9092). See docs/synth.md.
    """

    name: str
    proto: Literal["tcp", "udp", "icmp"] = "tcp"
    clients: str
    servers: str
    port: int | None = Field(default=None, ge=1, le=65535)
    rate: float = Field(gt=0, le=100_000)
    same_project: bool = False
    requests: Range = (1.0, 1.0)
    request_bytes: Range | None = None
    response_bytes: Range | None = None
    think_ms: Range | None = None
    server_ms: Range = (0.02, 5.0)
    app: Literal["none", "http", "dns", "mysql", "pgsql", "redis"] = "none"
    templates: list[str] | None = Field(default=None, min_length=1, max_length=64)
    errors: float = Field(default=0.01, ge=0, le=1)
    faults: FaultSpec = Field(default_factory=FaultSpec)

    @field_validator("requests", "think_ms", "server_ms")
    @classmethod
    def _non_negative(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and (value[0] < 0 or value[1] > 1e9):
            raise ValueError("must be >= 0 (and sensible)")
        return value

    @model_validator(mode="after")
    def _port_for_l4(self) -> ServiceSpec:
        if self.proto != "icmp" and self.port is None:
            raise ValueError(f"service {self.name!r}: a {self.proto} service needs a 'port'")
        if self.requests[0] < 1:
            raise ValueError(f"service {self.name!r}: 'requests' must be >= 1")
        if self.app != "none":
            from cloudtap.synth.apps import check_app

            check_app(self)
        for label in ("request_bytes", "response_bytes"):
            rng = getattr(self, label)
            if rng is not None and (rng[0] < 0 or rng[1] > 1e10 or (self.proto != "tcp" and rng[1] > 8000)):
                raise ValueError(f"service {self.name!r}: '{label}' out of range")
        return self


class Scenario(_Model):
    """A complete synthetic capture: cloud, traffic mix, faults, incidents and output format."""

    name: str = "scenario"
    seed: int = Field(default=1, ge=0, lt=2**63)
    start: datetime = DEFAULT_START
    duration: Duration = 600.0
    encapsulation: Literal["none", "vxlan", "erspan2", "gre-teb"] = "none"
    mtu: int | None = Field(default=None, ge=576, le=9000)
    snaplen: int = Field(default=262144, ge=64, le=262144)
    ts_precision: Literal["ns", "us"] = "ns"
    rtt: RttSpec = Field(default_factory=RttSpec)
    faults: FaultSpec = Field(default_factory=FaultSpec)
    cloud: CloudSpec
    services: list[ServiceSpec] = Field(default_factory=list)
    incidents: list[Incident] = Field(default_factory=list)

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    @field_validator("duration")
    @classmethod
    def _sane_duration(cls, value: float) -> float:
        if not 0 < value <= 7 * 86400:
            raise ValueError("duration must be > 0 and at most 7 days")
        return value

    @model_validator(mode="after")
    def _unique_service_names(self) -> Scenario:
        names = [s.name for s in self.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"service names must be unique, repeated: {', '.join(dupes)}")
        return self

    @property
    def start_ns(self) -> int:
        """Scenario start in ns since the Unix epoch."""
        delta = self.start - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000

    @property
    def duration_ns(self) -> int:
        """Scenario length in ns."""
        return int(round(self.duration * 1e9))

    def effective_faults(self, override: FaultSpec | None = None) -> dict[str, Any]:
        """Scenario faults over defaults, then ``override`` on top."""
        merged = dict(FAULT_DEFAULTS)
        for spec in (self.faults, override):
            if spec is not None:
                merged.update({k: v for k, v in spec.model_dump().items() if v is not None})
        return merged


def _format_validation(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid scenario ({err.error_count()} problem(s)):"]
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def scenario_from_dict(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate a parsed mapping into a :class:`Scenario`, checking every cross reference.

    Args:
        data: the mapping (as loaded from YAML).
        source: a name for error messages (the file path).

    Returns:
        The validated scenario.

    Raises:
        ConfigError: with one line per problem, naming the offending key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a scenario must be a YAML mapping, got {type(data).__name__}")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation(source, err)) from None
    from cloudtap.synth.cloud import build_cloud
    from cloudtap.synth.sessions import check_references

    try:
        check_references(scenario, build_cloud(scenario))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file.

    Args:
        path: the YAML file.

    Returns:
        The validated scenario.

    Raises:
        ConfigError: the file is missing, is not YAML, or describes an invalid scenario.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read scenario: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return scenario_from_dict(data, str(path))


def with_overrides(scenario: Scenario, **changes: Any) -> Scenario:
    """A copy of ``scenario`` with top-level fields replaced and everything re-validated.

    Args:
        scenario: the base scenario.
        **changes: top-level fields (``seed``, ``duration``...); ``None`` values are ignored.

    Raises:
        ConfigError: an override is invalid.
    """
    data = scenario.model_dump()
    data.update({k: v for k, v in changes.items() if v is not None})
    return scenario_from_dict(data, f"scenario {scenario.name!r}")


def resolve_scenario(ref: str | Path) -> Scenario:
    """A built-in scenario by name, or a scenario YAML file by path."""
    if str(ref) in BUILTIN_NAMES and not Path(ref).is_file():
        return builtin_scenario(str(ref))
    if not Path(ref).exists():
        raise ConfigError(
            f"{ref}: no such scenario file, nor a built-in scenario ({', '.join(BUILTIN_NAMES)})"
        )
    return load_scenario(ref)


def scenarios_dir() -> Path:
    """The folder holding the built-in scenarios (package data)."""
    return Path(__file__).resolve().parent / "scenarios"


def builtin_scenario(name: str) -> Scenario:
    """Return a built-in scenario: ``small-cloud``, ``bench`` or ``seed-case``.

    Args:
        name: one of :data:`BUILTIN_NAMES`.

    Raises:
        ConfigError: unknown name or missing file.
    """
    if name not in BUILTIN_NAMES:
        raise ConfigError(f"unknown built-in scenario {name!r}; choose one of {', '.join(BUILTIN_NAMES)}")
    return load_scenario(scenarios_dir() / f"{name}.yaml")
