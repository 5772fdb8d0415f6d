"""Policies in cloud terms: select VMs by project, name, subnet, host or tag; say what to capture."""

from __future__ import annotations

import json
import threading
import time

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloudtap.server.controller.db import StateDB, dumps


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Selector(_Strict):
    """Which VMs: every given criterion must match (globs ``*``/``?`` on names)."""

    project: str | None = Field(None, description="project name or key (glob)")
    vm: str | None = Field(None, description="VM name (glob)")
    subnet: str | None = Field(None, description="CIDR (a VM interface IP inside it), or a subnet name/key")
    host: str | None = Field(None, description="host name (glob)")
    tag: str | None = Field(None, description="a VM tag (glob)")


MAX_PAYLOAD_BYTES = 9000  #: a jumbo frame's payload


class Action(_Strict):
    """What to do with the selected VMs' traffic."""

    capture: bool = Field(True, description="capture (true) or exclude (false) the selected VMs")
    snaplen: int | None = Field(None, ge=64, le=65535, description="bytes kept per packet (restart-required)")
    store_packets: bool = Field(False, description="keep packets for PCAP retrieval")
    payload_bytes: int = Field(
        0, ge=0, le=MAX_PAYLOAD_BYTES,
        description="bytes of L4 payload kept per packet of these VMs (0: headers only); applied at once",
    )  # fmt: skip
    requests: bool | None = Field(
        None, description="parse application requests in these VMs' packets (default: when payload_bytes > 0)"
    )

    @model_validator(mode="after")
    def _requests_need_payload(self) -> Action:
        if self.requests and self.payload_bytes == 0:
            raise ValueError("requests: true needs payload_bytes > 0 (requests are parsed from the payload)")
        return self

    @property
    def parses_requests(self) -> bool:
        """Whether the agent parses application requests for this action (``requests``, defaulted)."""
        wanted = self.payload_bytes > 0 if self.requests is None else self.requests
        return bool(wanted and self.capture)


class Policy(_Strict):
    """One policy; among the policies matching a VM, the lowest ``priority`` wins."""

    name: str = Field(..., min_length=1, max_length=200)
    priority: int = Field(100, description="lower wins when several policies select one VM")
    enabled: bool = True
    select: Selector = Field(default_factory=Selector)
    bpf: str | None = Field(None, description="5-tuple/BPF filter on top of the VM selection (tcpdump syntax)")
    action: Action = Field(default_factory=Action)

    @field_validator("bpf")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from cloudtap.capture.bpf import compile_filter
        from cloudtap.errors import FilterError

        try:
            compile_filter(value, linktype=1, snaplen=256)
        except FilterError as exc:
            raise ValueError(str(exc)) from exc
        return value.strip()


class Policies:
    """Policies in memory, written through to the database; ``generation`` counts changes (another server
    process's too: reloaded whenever one changes them)."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._policies: dict[str, Policy] = {}
        self.generation = 0
        db.subscribe("policies", self.reload)
        self.reload()
        self.generation = 0

    def reload(self, _detail: str = "") -> None:
        """Read every policy again (``generation`` goes up when they differ)."""
        with self._lock:  # held by the writers too: a reload never undoes a write of this process
            rows = self.db.rows("SELECT * FROM policies")
            fresh = {r["name"]: Policy.model_validate(json.loads(r["doc"])) for r in rows}
            if fresh != self._policies:
                self._policies = fresh
                self.generation += 1

    def all(self) -> list[Policy]:
        """Every policy, by priority then name."""
        return sorted(self._policies.values(), key=lambda p: (p.priority, p.name))

    def get(self, name: str) -> Policy | None:
        return self._policies.get(name)

    def put(self, policy: Policy) -> bool:
        """Create or replace a policy; returns True when it changed."""
        with self._lock:
            old = self._policies.get(policy.name)
            if old is not None and dumps(old.model_dump()) == dumps(policy.model_dump()):
                return False
            self._policies[policy.name] = policy
            self.generation += 1
            self.db.execute("INSERT INTO policies (name, doc, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                            "SET doc = excluded.doc, updated_at = excluded.updated_at",
                            (policy.name, dumps(policy.model_dump(mode="json")), time.time()))  # fmt: skip
        return True

    def delete(self, name: str) -> bool:
        """Remove a policy; returns True when it existed."""
        with self._lock:
            existed = self._policies.pop(name, None) is not None
            self.generation += int(existed)
            self.db.execute("DELETE FROM policies WHERE name = ?", (name,))
        return existed
