"""BrokerSection: the agent's ``broker`` config (destinations, rules, host fuse); every key is hot.

The contract is docs/broker.md (shared with the controller, which compiles distribution policies into it).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

#: ``json_schema_extra`` of hot keys (same marker as :data:`cloudtap.agent.config.HOT`; not imported: the
#: broker sits below the agent).
HOT: JsonDict = {"apply": "hot"}
NAME_RE = re.compile(r"^[a-z0-9_.-]{1,64}$")
Encap = Literal["vxlan", "gre", "erspan2", "erspan3", "raw"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a name of 1-64 characters [a-z0-9_.-]")
    return value


class Destination(_Model):
    """Where copies go: an underlay address (VXLAN, GRE, ERSPAN) or a local interface (raw)."""

    name: str = Field(description="unique name [a-z0-9_.-]{1,64}", json_schema_extra=HOT)
    encap: Encap = Field("vxlan", description="vxlan | gre | erspan2 | erspan3 | raw", json_schema_extra=HOT)
    address: str | None = Field(
        None, description="underlay remote, IPv4 or IPv6 (not for raw)", json_schema_extra=HOT
    )
    source: str | None = Field(
        None, description="underlay source address (default: the kernel's choice)", json_schema_extra=HOT
    )
    port: int = Field(4789, ge=1, le=65535, description="vxlan UDP destination port", json_schema_extra=HOT)
    vni: int = Field(0, ge=0, le=(1 << 24) - 1, description="vxlan VNI", json_schema_extra=HOT)
    key: int | None = Field(
        None, ge=0, le=(1 << 32) - 1, description="gre key (optional)", json_schema_extra=HOT
    )
    session_id: int = Field(0, ge=0, le=1023, description="erspan session id", json_schema_extra=HOT)
    interface: str | None = Field(None, description="raw: the interface to send on", json_schema_extra=HOT)
    mtu: int = Field(
        1500,
        ge=576,
        le=65535,
        description="underlay MTU: larger copies are truncated to fit",
        json_schema_extra=HOT,
    )
    max_bps: int = Field(
        1_000_000_000,
        ge=0,
        description="token-bucket cap, bits/s of copies (0 = no cap)",
        json_schema_extra=HOT,
    )
    burst_bytes: int = Field(1 << 20, ge=1, description="token-bucket depth (bytes)", json_schema_extra=HOT)

    _check_name = field_validator("name")(classmethod(lambda cls, v: _name(v)))

    @field_validator("address", "source")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from exc

    @model_validator(mode="after")
    def _encap_fields(self) -> Destination:
        if self.encap == "raw":
            if not self.interface:
                raise ValueError(f"destination {self.name}: encap raw needs 'interface'")
            return self
        if self.address is None:
            raise ValueError(f"destination {self.name}: encap {self.encap} needs 'address'")
        if self.source is not None and self.ip_version != ipaddress.ip_address(self.source).version:
            raise ValueError(f"destination {self.name}: source and address are not of the same IP version")
        if self.key is not None and self.encap != "gre":
            raise ValueError(f"destination {self.name}: 'key' is for encap gre only")
        return self

    @property
    def ip_version(self) -> int:
        """4 or 6 (0 for raw)."""
        return ipaddress.ip_address(self.address).version if self.address else 0


class Rule(_Model):
    """Which packets go to which destinations (one compiled distribution policy)."""

    name: str = Field(description="the distribution policy's name", json_schema_extra=HOT)
    interfaces: list[str] = Field(
        default_factory=lambda: ["*"], description="capture interface globs", json_schema_extra=HOT
    )
    macs: list[str] = Field(
        default_factory=list, description="VM MACs (direction is relative to these)", json_schema_extra=HOT
    )
    bpf: str | None = Field(
        None, description="tcpdump filter (also matched inside 802.1Q tags)", json_schema_extra=HOT
    )
    direction: Literal["both", "from_vm", "to_vm"] = Field(
        "both", description="relative to macs", json_schema_extra=HOT
    )
    truncate: int = Field(
        0, ge=0, le=65535, description="keep the first N bytes (0 = whole frame)", json_schema_extra=HOT
    )
    vlan: Literal["keep", "strip"] = Field(
        "keep", description="strip 802.1Q/802.1ad tags before sending", json_schema_extra=HOT
    )
    destinations: list[str] = Field(
        default_factory=list, description="destination names", json_schema_extra=HOT
    )

    _check_name = field_validator("name")(classmethod(lambda cls, v: _name(v)))

    @field_validator("macs")
    @classmethod
    def _macs(cls, value: list[str]) -> list[str]:
        out = []
        for mac in value:
            text = mac.strip().lower().replace("-", ":")
            if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", text):
                raise ValueError(f"{mac!r} is not a MAC address")
            out.append(text)
        return out

    @field_validator("truncate")
    @classmethod
    def _truncate(cls, value: int) -> int:
        if 0 < value < 14:
            raise ValueError("truncate keeps at least the 14-byte Ethernet header (or 0: whole frame)")
        return value


class FuseSection(_Model):
    """Host fuse: stop forwarding while the host's uplink or CPU is above a threshold."""

    uplink_interfaces: list[str] = Field(
        default_factory=list, description="host uplinks watched (rx+tx)", json_schema_extra=HOT
    )
    max_uplink_bps: int = Field(
        default=0,
        ge=0,
        description="uplink bits/s that trips the fuse (0 = not watched)",
        json_schema_extra=HOT,
    )
    max_cpu_percent: float = Field(
        default=0,
        ge=0,
        le=100,
        description="host CPU busy percent that trips it (0 = not watched)",
        json_schema_extra=HOT,
    )
    resume_ratio: float = Field(
        default=0.8, gt=0, le=1, description="resume below threshold * resume_ratio", json_schema_extra=HOT
    )


class BrokerSection(_Model):
    """Virtual packet broker: copies of selected packets to tools (docs/broker.md)."""

    enabled: bool = Field(False, description="no rule runs unless true", json_schema_extra=HOT)
    destinations: list[Destination] = Field(
        default_factory=list, description="where copies go", json_schema_extra=HOT
    )
    rules: list[Rule] = Field(default_factory=list, description="what goes where", json_schema_extra=HOT)
    fuse: FuseSection = Field(
        default_factory=lambda: FuseSection(), description="host fuse", json_schema_extra=HOT
    )

    @model_validator(mode="after")
    def _references(self) -> BrokerSection:
        names = [d.name for d in self.destinations]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"destination names must be unique: {dup}")
        rules = [r.name for r in self.rules]
        dup = sorted({n for n in rules if rules.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique: {dup}")
        known = set(names)
        for rule in self.rules:
            missing = [d for d in rule.destinations if d not in known]
            if missing:
                raise ValueError(f"rule {rule.name}: unknown destinations {missing}")
        return self
