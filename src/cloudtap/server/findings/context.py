"""What every detector of one cycle shares: the window, the settings, the store, names, and the edges.

Also the helpers that turn an edge into a :class:`~cloudtap.server.findings.model.Subject` with the
names as of the window, and the reproduce commands (the equivalent ``cloudtap`` CLI call).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cloudtap.inventory.names import NameResolver, NoNames
from cloudtap.server.findings.config import FindingsSection
from cloudtap.server.findings.edges import Edges, read_edges
from cloudtap.server.findings.model import Subject
from cloudtap.server.findings.store import iso_s

_PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
NS = 1_000_000_000


def proto_name(proto: int | None) -> str:
    """``tcp`` for 6, else the number."""
    return "" if proto is None else _PROTO.get(int(proto), str(int(proto)))


@dataclass
class Cycle:
    """One minute ``[t0, t1)`` being examined."""

    store: Any
    config: FindingsSection
    t0: int
    t1: int
    names: NameResolver = field(default_factory=NoNames)
    baseline_start: int | None = None  #: when new-edge learning began (epoch s)
    rules: list[Any] = field(default_factory=list)  #: isolation rules in force

    @cached_property
    def edges(self) -> Edges:
        """The minute's edges (read once, shared by the detectors)."""
        return read_edges(self.store, self.t0, self.t1)

    @property
    def at_ns(self) -> int:
        """Names are resolved as of the window's start."""
        return self.t0 * NS

    def window_args(self, t0: int | None = None, t1: int | None = None) -> str:
        """``--from ... --to ...`` of a window (default the cycle's)."""
        return f"--from {iso_s(self.t0 if t0 is None else t0)} --to {iso_s(self.t1 if t1 is None else t1)}"

    def subjects(self, rows: list[dict[str, Any]], kind: str = "edge") -> list[Subject]:
        """Subjects of edge rows (``client_ip``, ``server_ip``, ``server_port``, ``proto`` + ids), named."""
        vm_ids = {r.get(k, 0) for r in rows for k in ("client_vm_id", "server_vm_id")} - {0}
        project_ids = {r.get(k, 0) for r in rows for k in ("client_project_id", "server_project_id")} - {0}
        vms = self.names.names("vm", sorted(vm_ids), self.at_ns) if vm_ids else {}
        projects = self.names.names("project", sorted(project_ids), self.at_ns) if project_ids else {}
        out = []
        for r in rows:
            s = Subject(
                kind=kind,  # type: ignore[arg-type]
                client_ip=str(r.get("client_ip", "")), server_ip=str(r.get("server_ip", "")),
                server_port=None if r.get("server_port") is None else int(r["server_port"]),
                proto=None if r.get("proto") is None else int(r["proto"]),
                client_project_id=int(r.get("client_project_id", 0)), server_project_id=int(r.get("server_project_id", 0)),
                client_vm_id=int(r.get("client_vm_id", 0)), server_vm_id=int(r.get("server_vm_id", 0)),
                client_vm=vms.get(int(r.get("client_vm_id", 0)), ""), server_vm=vms.get(int(r.get("server_vm_id", 0)), ""),
                client_project=projects.get(int(r.get("client_project_id", 0)), ""),
                server_project=projects.get(int(r.get("server_project_id", 0)), ""),
            )  # fmt: skip
            s.label = label(s)
            out.append(s)
        return out


def _end(name: str, ip: str) -> str:
    return f"{name} ({ip})" if name and ip else name or ip or "?"


def label(s: Subject) -> str:
    """One line naming the subject."""
    port = f":{s.server_port}/{proto_name(s.proto)}" if s.server_port is not None else ""
    if s.kind == "source":
        return f"{_end(s.client_vm, s.client_ip)} (source)"
    if s.kind == "service":
        project = s.server_project or (f"project id {s.server_project_id}" if s.server_project_id else "")
        return f"service {s.server_ip}{port}" + (f" in {project}" if project else "")
    return f"{_end(s.client_vm, s.client_ip)} -> {_end(s.server_vm, s.server_ip)}{port}"


def edge_args(s: Subject) -> str:
    """``--client-ip C --server-ip S --port P`` (drill's edge selector)."""
    out = f"--client-ip {s.client_ip} --server-ip {s.server_ip}"
    return out + (f" --port {s.server_port}" if s.server_port is not None else "")


def peer_args(s: Subject) -> str:
    """``--ip C --peer S --port P`` (bursts / backtest / compare)."""
    out = f"--ip {s.client_ip} --peer {s.server_ip}"
    return out + (f" --port {s.server_port}" if s.server_port is not None else "")


def pcap_command(s: Subject, t0: int, t1: int) -> str:
    """The ``cloudtap pcap`` call fetching the edge's packets from the agents."""
    bpf = f"host {s.client_ip} and host {s.server_ip}" + (
        f" and port {s.server_port}" if s.server_port else ""
    )
    vm = f" --vm {shlex.quote(s.client_vm)}" if s.client_vm else ""
    out = f"{s.client_ip}-{s.server_ip}-{t0}.pcapng".replace(":", "_")
    return f"cloudtap pcap -o {out} --from {iso_s(t0)} --to {iso_s(t1)}{vm} --filter {shlex.quote(bpf)}"
