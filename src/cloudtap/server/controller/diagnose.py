"""Why is there no data for VM X?: walk inventory -> host -> agent -> liveness -> capture -> policy ->
interface -> drops -> ingest -> the VM's own records, and name the first broken link."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudtap.inventory.model import Snapshot
from cloudtap.server.controller.compiler import Compilation, agent_for_host
from cloudtap.server.controller.fleet import Fleet
from cloudtap.server.controller.status import rates

STOPPED_STATES = frozenset({"shutoff", "stopped", "poweredoff", "suspended", "paused", "deleted", "error", "shelved"})


@dataclass
class Step:
    """One link of the chain."""

    step: str
    status: str  #: ok / broken / warn / skipped
    detail: str


@dataclass
class Diagnosis:
    """The walk for one VM; ``broken`` is the first broken link (None: data should be there)."""

    vm: str
    steps: list[Step] = field(default_factory=list)

    @property
    def broken(self) -> Step | None:
        return next((s for s in self.steps if s.status == "broken"), None)

    def as_dict(self) -> dict[str, Any]:
        b = self.broken
        return {"vm": self.vm, "ok": b is None, "broken": b.step if b else None,
                "summary": b.detail if b else "every link works: data for this VM should be arriving",
                "steps": [s.__dict__ for s in self.steps]}  # fmt: skip


RecordsLookup = Callable[[str, list[str], list[str]], dict[str, Any]]


def diagnose_vm(
    name: str,
    snap: Snapshot,
    fleet: Fleet,
    compilation: Compilation | None,
    records: RecordsLookup | None,
    ingest_fresh_s: float = 300.0,
) -> Diagnosis:
    """Walk the chain for the VM called (or keyed) ``name``; stop at the first broken link.

    Args:
        records: ``(agent name, VM MACs, VM IPs) -> {"last_any": epoch s or None, "last_vm": ..., "error": str}``.
        ingest_fresh_s: records older than this count as stopped.
    """
    d = Diagnosis(name)

    def add(step: str, status: str, detail: str) -> bool:
        d.steps.append(Step(step, status, detail))
        return status != "broken"

    vms = [v for v in snap.vms if v.name == name or v.key == name]
    if not vms:
        add("inventory", "broken", f"VM {name!r} is not in the inventory (source {snap.source!r}, {len(snap.vms)} VMs)")
        return d
    vm = vms[0]
    add("inventory", "ok", f"VM {vm.name} (key {vm.key}, project {vm.project or '-'})"
        + (f"; {len(vms) - 1} more VM(s) with this name" if len(vms) > 1 else ""))  # fmt: skip
    if vm.state and vm.state.lower() in STOPPED_STATES:
        add("vm_state", "broken", f"VM {vm.name} is {vm.state}: a stopped VM sends nothing")
        return d
    host = next((h for h in snap.hosts if h.key == vm.host), None)
    if host is None:
        add("host", "broken", f"the inventory places VM {vm.name} on no known host (host key {vm.host!r})")
        return d
    add("host", "ok", f"runs on host {host.name} ({host.address or 'no address'})")
    agent = agent_for_host(host, fleet.registry.all())
    if agent is None:
        add("agent", "broken", f"no registered agent runs on host {host.name} (host name or address {host.address or '-'})")
        return d
    add("agent", "ok", f"agent {agent.name} ({agent.id}, {agent.mode or 'unknown'} mode)")
    now = time.time()
    silent = now - agent.last_seen
    if fleet.is_stale(agent, now):
        add("alive", "broken", f"agent {agent.name} sent no heartbeat for {silent:.0f} s "
            f"(stale after {fleet.stale_after} x {agent.heartbeat_s:g} s)")  # fmt: skip
        return d
    add("alive", "ok", f"last heartbeat {silent:.1f} s ago")
    latest = fleet.heartbeats.latest(agent.id)
    rep = latest.report if latest else None
    if rep is None or not rep.capturing:
        why = ", ".join(rep.paused_by) if rep and rep.paused_by else "no status yet"
        add("capture", "broken", f"capture is off on agent {agent.name}: {why}")
        return d
    add("capture", "ok", "capturing")
    ifaces = [i for i in snap.interfaces if i.vm == vm.key]
    macs = sorted({i.mac.lower() for i in ifaces if i.mac})
    ips = sorted({ip for i in ifaces for ip in i.ips})
    compiled = compilation.agents.get(agent.id) if compilation else None
    if compiled is not None and compiled.active:
        if vm.name not in compiled.vms:
            won = compilation.vm_policy.get(vm.key) if compilation else None
            why = f"policy {won!r} turns its capture off" if won else "no enabled policy selects it"
            add("policy", "broken", f"agent {agent.name} is told not to capture VM {vm.name}: {why}")
            return d
        add("policy", "ok", f"selected by {', '.join(compiled.policies)}")
    else:
        add("policy", "skipped", "no policy in force: the agent captures everything it sees")
    if agent.mode == "interfaces":
        seen = {i.mac.lower(): i for i in rep.interfaces if i.mac}
        names = {i.name for i in rep.interfaces}
        hit = [m for m in macs if m in seen] + [i.device for i in ifaces if i.device and i.device in names]
        if not hit:
            add("interface", "broken", f"agent {agent.name} sees no interface of VM {vm.name} (MACs {', '.join(macs) or '-'}; "
                f"it sees {len(rep.interfaces)} interfaces)")  # fmt: skip
            return d
        add("interface", "ok", f"captures {', '.join(sorted(set(hit)))}")
    else:
        add("interface", "skipped", f"{agent.mode or 'unknown'} mode: the agent sees all VMs' traffic, not per-VM interfaces")
    figures = rates(fleet.heartbeats.history.window(agent.id, now - 60))
    if figures["drops"] and not figures["pps"]:
        add("drops", "broken", f"agent {agent.name} dropped {figures['drops']} packets and kept none in the last minute")
        return d
    add("drops", "warn" if figures["drops"] else "ok", f"{figures['drops']} drops, {figures['pps']:.0f} packets/s in the last minute")
    if records is None:
        add("ingest", "skipped", "no flow store attached")
        return d
    found = records(agent.name, macs, ips)
    if found.get("error"):
        add("ingest", "warn", f"cannot query the store: {found['error']}")
        return d
    last_any = found.get("last_any")
    if not last_any:
        add("ingest", "broken", f"no record from agent {agent.name} was ever stored (is its output.sink 'server'? "
            f"ship errors: {rep.errors[-1] if rep.errors else 'none reported'})")  # fmt: skip
        return d
    age = now - last_any
    if age > ingest_fresh_s:
        add("ingest", "broken", f"records from agent {agent.name} stopped {age:.0f} s ago "
            f"({rep.ship_pending_batches} batches waiting in its spool)")  # fmt: skip
        return d
    add("ingest", "ok", f"last record from agent {agent.name} stored {max(age, 0):.0f} s ago")
    last_vm = found.get("last_vm")
    if not last_vm:
        add("vm_traffic", "broken", f"agent {agent.name}'s records hold no traffic of VM {vm.name} "
            f"(MACs {', '.join(macs) or '-'}, IPs {', '.join(ips) or '-'}): is the VM silent?")  # fmt: skip
        return d
    add("vm_traffic", "ok", f"last record of VM {vm.name} stored {max(now - last_vm, 0):.0f} s ago")
    return d
