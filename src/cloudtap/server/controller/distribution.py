"""Distribution in cloud terms: destinations (where copies go) and distribution policies (which VMs' packets,
filtered, truncated, to which destinations), stored and versioned with the capture policies.

The fields follow the agent's ``broker`` section (docs/controller.md, "Distribution policies"). Unlike capture
policies, several distribution policies may apply to one VM: each copies to its own destinations.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloudtap.server.controller.db import StateDB, dumps
from cloudtap.server.controller.policy import Selector

#: destination and policy names: what the agent accepts (``[a-z0-9_.-]{1,64}``)
NAME_PATTERN = r"^[a-z0-9_.-]{1,64}$"
Encap = Literal["vxlan", "gre", "erspan2", "erspan3", "raw"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _address(value: str | None) -> str | None:
    if value is None or not str(value).strip():
        return None
    return str(ipaddress.ip_address(str(value).strip()))


def checked_bpf(value: str | None) -> str | None:
    """A tcpdump filter that libpcap compiles (stripped), or None; ValueError naming the fault."""
    if value is None or not value.strip():
        return None
    from cloudtap.capture.bpf import compile_filter
    from cloudtap.errors import FilterError

    try:
        compile_filter(value, linktype=1, snaplen=256)
    except FilterError as exc:
        raise ValueError(str(exc)) from exc
    return value.strip()


class Destination(_Strict):
    """Where copies go: a tunnel to a tool (VXLAN, GRE, ERSPAN II/III) or a raw interface."""

    name: str = Field(..., pattern=NAME_PATTERN)
    encap: Encap = "vxlan"
    address: str | None = Field(None, description="underlay remote, IPv4 or IPv6 (not for raw)")
    source: str | None = Field(None, description="underlay source address (default: the kernel's choice)")
    port: int = Field(4789, ge=1, le=65535, description="VXLAN UDP destination port")
    vni: int = Field(0, ge=0, le=2**24 - 1, description="VXLAN VNI")
    key: int | None = Field(None, ge=0, le=2**32 - 1, description="GRE key")
    session_id: int = Field(0, ge=0, le=1023, description="ERSPAN session id")
    interface: str | None = Field(
        None, min_length=1, max_length=15, description="raw: the interface to send on"
    )
    mtu: int = Field(1500, ge=576, le=65535, description="underlay MTU: larger copies are truncated to fit")
    max_bps: int = Field(
        1_000_000_000, ge=0, description="token-bucket cap of copies sent, bits/s (0: no cap)"
    )
    burst_bytes: int = Field(1_048_576, ge=1500)

    @field_validator("address", "source")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        return _address(value)

    @model_validator(mode="after")
    def _complete(self) -> Destination:
        if self.encap == "raw":
            if not self.interface:
                raise ValueError("a raw destination needs interface (the interface to send on)")
            return self
        if self.address is None:
            raise ValueError(f"a {self.encap} destination needs address (the underlay remote)")
        if (
            self.source is not None
            and ipaddress.ip_address(self.source).version != ipaddress.ip_address(self.address).version
        ):
            raise ValueError("source and address must be of the same IP version")
        if self.key is not None and self.encap != "gre":
            raise ValueError("key is for encap gre only")
        return self


class DistributionPolicy(_Strict):
    """Which VMs' packets go to which destinations, filtered and truncated."""

    name: str = Field(..., pattern=NAME_PATTERN)
    enabled: bool = True
    priority: int = Field(100, description="order of the rules in the agents' broker section (lower first)")
    select: Selector = Field(default_factory=Selector)
    bpf: str | None = Field(None, description="tcpdump filter on the packet (matched inside tunnels/VLAN)")
    direction: Literal["both", "from_vm", "to_vm"] = "both"
    truncate: int = Field(
        0, ge=0, le=65535, description="keep the first N bytes of the frame (0: whole frame)"
    )
    vlan: Literal["keep", "strip"] = "keep"
    destinations: list[str] = Field(
        ..., min_length=1, description="names of destinations defined at the controller"
    )

    @field_validator("bpf")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return checked_bpf(value)

    @field_validator("truncate")
    @classmethod
    def _keeps_ethernet(cls, value: int) -> int:
        if 0 < value < 14:
            raise ValueError("truncate keeps at least the 14-byte Ethernet header (or 0: whole frame)")
        return value

    @field_validator("destinations")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


#: kinds of documents the ``distribution`` table holds
KINDS = ("destination", "policy")


class Distribution:
    """Destinations and distribution policies in memory, written through to the database (table
    ``distribution``, topic ``distribution``); ``generation`` counts changes, another server process's too."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._docs: dict[tuple[str, str], Destination | DistributionPolicy] = {}
        self.generation = 0
        db.subscribe("distribution", self.reload)
        self.reload()
        self.generation = 0

    def reload(self, _detail: str = "") -> None:
        """Read every document again (``generation`` goes up when they differ)."""
        with self._lock:
            fresh: dict[tuple[str, str], Destination | DistributionPolicy] = {}
            for r in self.db.rows("SELECT kind, name, doc FROM distribution"):
                model = Destination if r["kind"] == "destination" else DistributionPolicy
                fresh[(r["kind"], r["name"])] = model.model_validate(json.loads(r["doc"]))
            if fresh != self._docs:
                self._docs = fresh
                self.generation += 1

    def destinations(self) -> list[Destination]:
        """Every destination, by name."""
        found = [d for d in self._docs.values() if isinstance(d, Destination)]
        return sorted(found, key=lambda d: d.name)

    def policies(self) -> list[DistributionPolicy]:
        """Every distribution policy, by priority then name."""
        found = [p for p in self._docs.values() if isinstance(p, DistributionPolicy)]
        return sorted(found, key=lambda p: (p.priority, p.name))

    def destination(self, name: str) -> Destination | None:
        return self._docs.get(("destination", name))  # type: ignore[return-value]

    def policy(self, name: str) -> DistributionPolicy | None:
        return self._docs.get(("policy", name))  # type: ignore[return-value]

    def put(self, doc: Destination | DistributionPolicy) -> bool:
        """Create or replace a destination or a policy; returns True when it changed."""
        kind = "destination" if isinstance(doc, Destination) else "policy"
        with self._lock:
            old = self._docs.get((kind, doc.name))
            if old is not None and dumps(old.model_dump()) == dumps(doc.model_dump()):
                return False
            self._docs[(kind, doc.name)] = doc
            self.generation += 1
            self.db.execute("INSERT INTO distribution (kind, name, doc, updated_at) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT(kind, name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                            (kind, doc.name, dumps(doc.model_dump(mode="json")), time.time()))  # fmt: skip
        return True

    def delete(self, kind: str, name: str) -> bool:
        """Remove a destination or policy (``kind``: destination/policy); True when it existed."""
        with self._lock:
            existed = self._docs.pop((kind, name), None) is not None
            self.generation += int(existed)
            self.db.execute("DELETE FROM distribution WHERE kind = ? AND name = ?", (kind, name))
        return existed

    def users_of(self, destination: str) -> list[str]:
        """Names of the policies sending to ``destination``."""
        return [p.name for p in self.policies() if destination in p.destinations]

    def missing_destinations(self, policy: DistributionPolicy) -> list[str]:
        """The policy's destinations that are not defined."""
        return [d for d in policy.destinations if self.destination(d) is None]

    def is_empty(self) -> bool:
        """Nothing defined: the controller leaves the agents' ``broker`` section to their group overlay."""
        return not self._docs
