"""FleetTargets: where a VM's packets are, from the flow records, the inventory history and the controller.

``for_vm("db-01", from_ns, to_ns)``:

1. the VM name (glob allowed) becomes inventory ids as they were during the window (or ``name`` is an IP);
2. the flow records of the window tagged with those ids (or carrying that IP) say which agents saw it
   and on which interfaces (``flow_log.agent_id``, ``interface_name``, ``vm_mac``);
3. each agent's name maps to its registered agent and the control URL it last reported that passed the
   controller's checks (:mod:`cloudtap.server.controller.control_url`); the target carries the agent's id
   and control key (sent to the agent, never logged).

An interface that is the VM's own (its MAC or host-side device) is read whole; any other interface (a
mirror port, a replay, another VM's tap) gets the VM's addresses as a filter
``host A`` (the agent matches it on VLAN-tagged frames too). When no agent that saw the VM has a known URL (or no record of it has
reached the server yet), the agent on the VM's inventory host is asked instead.

:meth:`FleetTargets.targets_for_agents` builds targets from registered agents named by the caller: the
server only ever asks agents it registered, at the address they registered.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudtap.inventory.names import NoNames
from cloudtap.server.controller.compiler import agent_for_host
from cloudtap.server.pcap.errors import PcapError, PcapNotFound, PcapRequestError
from cloudtap.server.pcap.targets import Target

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 1_000_000_000
#: an agent to ask: its id, name or host name, or ``(that, its interfaces)``
AgentAsked = str | tuple[str, Sequence[str]]


@dataclass
class Subject:
    """What is asked for, as the inventory knew it during the window."""

    label: str  #: ``VM 'db-01'`` or ``IP 10.0.0.5``
    vm_ids: set[int] = field(default_factory=set)
    ips: set[str] = field(default_factory=set)
    macs: set[str] = field(default_factory=set)  #: lower-case
    devices: set[str] = field(default_factory=set)  #: host-side interface names
    hosts: dict[str, Any] = field(default_factory=dict)  #: host key -> inventory Host
    match_ips: bool = False  #: match flow records by address too (an IP was asked for)

    def bpf(self) -> str | None:
        """``host A or host B``; ``None`` without addresses (the agent also matches it inside VLAN tags)."""
        if not self.ips:
            return None
        return " or ".join(f"host {ip}" for ip in sorted(self.ips))


@dataclass(frozen=True)
class Seen:
    """One agent interface on which flow records of the subject were stored."""

    agent: str  #: the agent's name in its records
    interface: str
    vm_mac: str
    records: int


class FleetTargets:
    """The :class:`~cloudtap.server.pcap.targets.PcapTargets` of a server with an inventory and a controller.

    Args:
        store: the flow store (``query_arrow``); its ``flow_log`` says who saw what.
        names: the inventory's NameResolver (``app.state.names``).
        controller: the :class:`~cloudtap.server.controller.service.Controller` (registry, heartbeats).
        inventory: the InventoryStore (addresses, hosts, devices); default ``names.inventory``.
        database: the flow tables' database when the store has no DDL context.
        record_span_ns: longest period of one flow record (bounds the scan of ``flow_log`` by ``first``).
        max_moments: most inventory epochs of the window that are looked at.
    """

    def __init__(
        self,
        store: Any,
        names: Any,
        controller: Any,
        inventory: Any = None,
        database: str = "cloudtap",
        record_span_ns: int = DAY_NS,
        max_moments: int = 64,
    ) -> None:
        self.store = store
        self.names = names
        self.controller = controller
        self.inventory = inventory if inventory is not None else getattr(names, "inventory", None)
        self.database = database
        self.record_span_ns = record_span_ns
        self.max_moments = max_moments

    # -- the protocol ---------------------------------------------------------------------------------
    def for_vm(self, name: str, from_ns: int, to_ns: int) -> list[Target]:
        """The agents and interfaces that captured VM (or IP) ``name`` during ``[from_ns, to_ns)``.

        Raises:
            PcapNotFound: the VM is unknown in the window, or no agent saw it and none runs on its host.
            PcapRequestError: agents saw it but the server knows no control URL for some of them.
        """
        subject = self.subject(name, from_ns, to_ns)
        seen = self.seen(subject, from_ns, to_ns)
        span = f"between {_iso(from_ns)} and {_iso(to_ns)}"
        targets, missing = self._targets_of(subject, seen)
        if targets and not missing:
            return targets
        fallback = self._host_fallback(subject)
        if fallback and not targets:
            log.info(
                "pcap: %s: asking the agent on its host (%s)",
                subject.label,
                ", ".join(missing) or "no records",
            )
            return fallback
        if missing:
            raise PcapRequestError(
                f"cannot reach every agent that captured {subject.label} {span}: {'; '.join(missing)}. "
                "Give the agents explicit (targets / cloudtap pcap --agent URL)"
            )
        where = ", ".join(sorted(h.name for h in subject.hosts.values()))
        host_note = f"; no registered agent with a control URL runs on its host {where}" if where else ""
        raise PcapNotFound(f"no agent captured {subject.label} {span} (no flow record of it{host_note})")

    # -- 1. what is asked for -------------------------------------------------------------------------
    def subject(self, name: str, from_ns: int, to_ns: int) -> Subject:
        """The VM ids, addresses, MACs, devices and hosts of ``name`` during the window.

        Raises:
            PcapNotFound: no VM has that name in the window (the message says whether it exists at all).
        """
        name = name.strip()
        moments = self._moments(from_ns, to_ns)
        try:
            ip = str(ipaddress.ip_address(name))
        except ValueError:
            ip = None
        if ip is not None:
            subject = Subject(f"IP {ip}", ips={ip}, match_ips=True)
            for t in moments:
                self._add_inventory(subject, t, ip=ip)
            return subject
        subject = Subject(f"VM {name!r}")
        for t in moments:
            subject.vm_ids.update(int(i) for i in self.names.ids("vm", name, t))
        if not subject.vm_ids:
            if self.names.ids("vm", name, None):
                raise PcapNotFound(
                    f"VM {name!r} did not exist between {_iso(from_ns)} and {_iso(to_ns)} (the inventory knows it "
                    "at other times)"
                )
            raise PcapNotFound(f"no VM named {name!r} in the inventory")
        for t in moments:
            self._add_inventory(subject, t)
        return subject

    def _moments(self, from_ns: int, to_ns: int) -> list[int]:
        """The window's start and every inventory change inside it (at most ``max_moments``)."""
        moments = [from_ns]
        bounds = getattr(self.inventory, "boundaries", None)
        if bounds is not None:
            inside = [int(b) for b in bounds() if from_ns < int(b) < to_ns]
            if len(inside) > self.max_moments - 1:
                step = len(inside) / (self.max_moments - 1)
                inside = [inside[int(i * step)] for i in range(self.max_moments - 1)]
            moments += inside
        return moments

    def _add_inventory(self, subject: Subject, at_ns: int, ip: str | None = None) -> None:
        """Add what the inventory at ``at_ns`` says of the subject's VMs (or of the VMs holding ``ip``)."""
        if self.inventory is None or not hasattr(self.inventory, "view"):
            return
        view = self.inventory.view(at_ns)
        vm_ids = view.ids.get("vm", {})
        interfaces = view.snapshot.interfaces
        if ip is not None:
            keys = {i.vm for i in interfaces if ip in i.ips}
        else:
            keys = {key for key, i in vm_ids.items() if i in subject.vm_ids}
        vms = view.by_key("vm")
        hosts = view.by_key("host")
        for key in keys:
            vm = vms.get(key)
            if vm is not None and vm.host in hosts:
                subject.hosts.setdefault(vm.host, hosts[vm.host])
        for nic in interfaces:
            if nic.vm in keys:
                if ip is None:
                    subject.ips.update(nic.ips)
                if nic.mac:
                    subject.macs.add(nic.mac.lower())
                if nic.device:
                    subject.devices.add(nic.device)

    # -- 2. who saw it -----------------------------------------------------------------------------------
    def seen(self, subject: Subject, from_ns: int, to_ns: int) -> list[Seen]:
        """Agent interfaces with flow records of the subject overlapping the window, most records first."""
        conds = []
        params: dict[str, Any] = {"f": from_ns, "t": to_ns, "lb": max(0, from_ns - self.record_span_ns)}
        if subject.vm_ids:
            conds.append("has({ids:Array(UInt32)}, client_vm_id) OR has({ids:Array(UInt32)}, server_vm_id)")
            params["ids"] = sorted(subject.vm_ids)
        if subject.match_ips and subject.ips:
            conds.append(
                "has(arrayMap(x -> toIPv6(x), {ips:Array(String)}), client_ip)"
                " OR has(arrayMap(x -> toIPv6(x), {ips:Array(String)}), server_ip)"
            )
            params["ips"] = sorted(subject.ips)
        if not conds:
            return []
        sql = (
            f"SELECT agent_id, interface_name, lower(vm_mac) AS vm_mac, count() AS n FROM {self._table('flow_log')}\n"
            "WHERE first >= fromUnixTimestamp64Nano({lb:Int64}, 'UTC')\n"
            "  AND first < fromUnixTimestamp64Nano({t:Int64}, 'UTC')\n"
            "  AND last >= fromUnixTimestamp64Nano({f:Int64}, 'UTC')\n"
            f"  AND ({' OR '.join(conds)})\n"
            "GROUP BY agent_id, interface_name, vm_mac ORDER BY n DESC, agent_id, interface_name"
        )
        try:
            rows = self.store.query_arrow(sql, params).to_pylist()
        except Exception as exc:  # noqa: BLE001 - a store failure is answered (and audited) with its reason
            raise PcapError(f"the flow store cannot say which agents saw {subject.label}: {exc}") from exc
        return [
            Seen(str(r["agent_id"]), str(r["interface_name"]), str(r["vm_mac"]), int(r["n"])) for r in rows
        ]

    def _table(self, name: str) -> str:
        ctx = getattr(self.store, "ctx", None)
        return ctx.table(name) if ctx is not None else f"{self.database}.{name}"

    # -- 3. where to ask -----------------------------------------------------------------------------------
    def _targets_of(self, subject: Subject, seen: list[Seen]) -> tuple[list[Target], list[str]]:
        """Targets of the agents in ``seen``; and why some agents cannot be asked."""
        by_agent: dict[str, list[Seen]] = {}
        for s in seen:
            by_agent.setdefault(s.agent, []).append(s)
        targets: list[Target] = []
        missing: list[str] = []
        for agent_name, rows in by_agent.items():
            rec, url = self._agent(agent_name)
            if rec is None:
                missing.append(f"agent {agent_name!r} is not registered with the controller")
                continue
            if not url:
                refusal = self._refusal(rec)
                missing.append(
                    f"agent {agent_name!r} (host {rec.hostname}) has no accepted control URL: "
                    + (refusal or "it reported none (an older agent, or set control.advertise_url)")
                )
                continue
            targets += self._split(subject, rec, rows)
        return targets, missing

    def _split(self, subject: Subject, rec: Any, rows: list[Seen]) -> list[Target]:
        """One agent's targets: its interfaces that are the VM's own (whole), the others (filtered)."""
        bpf = subject.bpf()
        own = sorted({r.interface for r in rows if r.interface and _is_own(subject, r)})
        other = sorted({r.interface for r in rows if r.interface and not _is_own(subject, r)} - set(own))
        if any(not r.interface for r in rows):  # records without an interface name: ask for every interface
            return [self._target(rec, (), bpf)]
        if bpf is None:
            return [self._target(rec, tuple(own + other))]
        targets = [self._target(rec, tuple(own))] if own else []
        if other:
            targets.append(self._target(rec, tuple(other), bpf))
        return targets

    def _target(self, rec: Any, interfaces: tuple[str, ...], bpf: str | None = None, host: str | None = None) -> Target:
        """A target on registered agent ``rec``: its checked control URL, its id and its control key."""
        key = self.controller.control_key(rec.id) if hasattr(self.controller, "control_key") else None
        return Target(self._url_of(rec), interfaces, host or rec.hostname or rec.name, bpf, rec.id, key)

    def targets_for_agents(self, agents: Sequence[AgentAsked], interfaces: Sequence[str] = ()) -> list[Target]:
        """Targets on the named registered agents, at their checked control URLs, with their control keys.

        Args:
            agents: agent ids, names or host names; or ``(agent, interfaces)`` pairs (their own interfaces).
            interfaces: the interfaces (names, VM domains, globs) of agents given without any; empty: all.
        Raises:
            PcapRequestError: an agent is not registered, or has no accepted control URL (the reason said).
        """
        registry = self.controller.registry
        targets: list[Target] = []
        problems: list[str] = []
        for asked in agents:
            key, wanted = (asked, interfaces) if isinstance(asked, str) else asked
            rec = registry.find(key)
            if rec is None:
                problems.append(f"no registered agent with id, name or host name {key!r}")
            elif not self._url_of(rec):
                refusal = self._refusal(rec)
                problems.append(f"agent {rec.name!r} (host {rec.hostname}) has no accepted control URL"
                                + (f": {refusal}" if refusal else " (it reported none)"))  # fmt: skip
            else:
                targets.append(self._target(rec, tuple(wanted)))
        if problems:
            raise PcapRequestError("; ".join(problems))
        return targets

    def _refusal(self, rec: Any) -> str:
        refusals = getattr(self.controller, "url_refusals", None)
        found = refusals.get(rec.id) if refusals is not None else None
        return found.reason if found is not None else ""

    def _agent(self, name: str) -> tuple[Any, str]:
        """The registered agent called ``name`` in records (the one with a URL, most recently seen) and its URL."""
        registry = self.controller.registry
        found = [a for a in registry.all() if a.name == name]
        if not found:
            rec = registry.find(name)
            found = [rec] if rec is not None else []
        best: tuple[Any, str] = (None, "")
        for rec in sorted(found, key=lambda a: a.last_seen, reverse=True):
            url = self._url_of(rec)
            if url:
                return rec, url
            best = best if best[0] is not None else (rec, "")
        return best

    def _url_of(self, rec: Any) -> str:
        """The control URL of ``rec`` that passed the controller's checks (``""``: none)."""
        current = self.controller.registry.find(rec.id) or rec
        return str(getattr(current, "control_url", "") or "").rstrip("/")

    def _host_fallback(self, subject: Subject) -> list[Target]:
        """The agents on the subject's inventory hosts (its own interfaces when known, else filtered)."""
        targets = []
        agents = self.controller.registry.all()
        for host in subject.hosts.values():
            rec = agent_for_host(host, [a for a in agents if self._url_of(a)])
            if rec is None:
                continue
            latest = self.controller.heartbeats.latest(rec.id)
            reported = latest.report.interfaces if latest is not None else []
            own = set(subject.devices) | {i.name for i in reported if (i.mac or "").lower() in subject.macs}
            host_name = rec.hostname or host.name
            if own:
                targets.append(self._target(rec, tuple(sorted(own)), host=host_name))
            else:
                targets.append(self._target(rec, (), subject.bpf(), host_name))
        return targets


class AppFleetTargets:
    """``app.state.pcap_targets``: a :class:`FleetTargets` over the app's store, inventory and controller,
    looked up at each call (they are built by the routers' lifespans, after the app)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._built: tuple[tuple[int, int, int], FleetTargets] | None = None

    def fleet(self) -> FleetTargets:
        """The FleetTargets of the app's current state.

        Raises:
            PcapRequestError: no inventory or no controller in this server.
        """
        state = self.app.state
        names = getattr(state, "names", None)
        if names is None or isinstance(names, NoNames):
            raise PcapRequestError("no inventory: cannot find where a VM was captured; give explicit targets")
        controller = getattr(state, "controller", None)
        if controller is None:
            raise PcapRequestError("no controller: the server knows no agent URL; give explicit targets")
        store = getattr(state, "store", None)
        key = (id(store), id(names), id(controller))
        if self._built is None or self._built[0] != key:
            settings = getattr(state, "settings", None)
            database = settings.storage.database if settings is not None else "cloudtap"
            self._built = (key, FleetTargets(store, names, controller, database=database))
        return self._built[1]

    def for_vm(self, name: str, from_ns: int, to_ns: int) -> list[Target]:
        """See :meth:`FleetTargets.for_vm`."""
        return self.fleet().for_vm(name, from_ns, to_ns)

    def targets_for_agents(self, agents: Sequence[AgentAsked], interfaces: Sequence[str] = ()) -> list[Target]:
        """See :meth:`FleetTargets.targets_for_agents` (needs only the controller, not the inventory)."""
        controller = getattr(self.app.state, "controller", None)
        if controller is None:
            raise PcapRequestError("no controller: the server knows no registered agent")
        return FleetTargets(getattr(self.app.state, "store", None), None, controller).targets_for_agents(
            agents, interfaces
        )


def _is_own(subject: Subject, seen: Seen) -> bool:
    return bool(seen.vm_mac and seen.vm_mac in subject.macs) or seen.interface in subject.devices


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
