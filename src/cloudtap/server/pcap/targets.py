"""Where packets of a VM are: capture points on agents, and the protocol the inventory implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Target:
    """One agent to ask for packets.

    Attributes:
        url: the agent's control endpoint, e.g. ``http://10.0.0.7:9477``.
        interfaces: interface names, VM domains or globs on that agent (empty: all it stores).
        host: display name of the agent's host in interface names (default: the agent's id).
        bpf: a filter of this target's own, ANDed with the request's (e.g. the VM's addresses on an
            interface that carries other traffic too: a mirror port, a replay).
        agent_id: the registered agent behind ``url`` (targets the controller built), else None.
        key: that agent's control key, sent as ``Authorization: Bearer``; kept out of ``repr`` and
            comparisons, never logged or answered.
    """

    url: str
    interfaces: tuple[str, ...] = field(default_factory=tuple)
    host: str | None = None
    bpf: str | None = None
    agent_id: str | None = None
    key: str | None = field(default=None, repr=False, compare=False)


@runtime_checkable
class PcapTargets(Protocol):
    """Resolves a VM to the capture points that saw it (implemented by the controller/inventory)."""

    def for_vm(self, name: str, from_ns: int, to_ns: int) -> list[Target]:
        """The agents and interfaces that captured VM ``name`` during ``[from_ns, to_ns)``."""
        ...


class StaticTargets:
    """A fixed VM -> targets table (tests, small deployments)."""

    def __init__(self, table: dict[str, list[Target]]) -> None:
        self.table = table

    def for_vm(self, name: str, from_ns: int, to_ns: int) -> list[Target]:
        """The targets listed for ``name`` (any window)."""
        return list(self.table.get(name, []))
