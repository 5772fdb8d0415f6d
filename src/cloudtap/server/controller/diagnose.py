"""Why is there no data for VM X?: walk inventory -> host -> agent -> liveness -> capture -> policy ->
interface -> drops (kernel, flow table) -> limits (pps cap, CPU throttle), then the server's links
(``diagnose_storage``: rejected -> backpressure -> retention -> ingest -> vm_traffic -> tagging), and name
the first broken link with what to do about it."""

from __future__ import annotations

import time
from typing import Any

from cloudtap.inventory.model import Snapshot
from cloudtap.server.controller.compiler import Compilation, agent_for_host
from cloudtap.server.controller.diagnose_model import FIXES, Diagnosis, Step
from cloudtap.server.controller.diagnose_storage import RecordsLookup, ServerSide, Subject, storage_steps
from cloudtap.server.controller.fleet import Fleet
from cloudtap.server.controller.status import rates

__all__ = ["FIXES", "STOPPED_STATES", "Diagnosis", "RecordsLookup", "ServerSide", "Step", "diagnose_vm"]

STOPPED_STATES = frozenset({"shutoff", "stopped", "poweredoff", "suspended", "paused", "deleted", "error", "shelved"})
DROPS_WINDOW_S = 60.0  #: the agent's drops and limits are judged on the last minute of heartbeats


def diagnose_vm(
    name: str,
    snap: Snapshot,
    fleet: Fleet,
    compilation: Compilation | None,
    records: RecordsLookup | None,
    ingest_fresh_s: float = 300.0,
    server: ServerSide | None = None,
) -> Diagnosis:
    """Walk the chain for the VM called (or keyed) ``name``; stop at the first broken link.

    Args:
        records: ``(agent name, VM MACs, VM IPs) -> {"last_any": epoch s or None, "last_vm": ..., "error": str}``
            (``"last_logged"``: the agent's last batch in ``ingest_log``, for the retention link).
        ingest_fresh_s: records older than this count as stopped.
        server: the server's ingest, retention and tagging state (None: those links only from heartbeats).
    """
    d = Diagnosis(name)
    add = d.add

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
    figures = rates(fleet.heartbeats.history.window(agent.id, now - DROPS_WINDOW_S))
    if not _drops(d, agent.name, figures) or not _limits(d, agent.name, figures):
        return d
    window = rates(fleet.heartbeats.history.window(agent.id, now - ingest_fresh_s))
    subject = Subject(agent.name, rep, vm, macs, ips, window, ingest_fresh_s)
    storage_steps(d, subject, records, server, ingest_fresh_s, now)
    return d


def _drops(d: Diagnosis, agent: str, f: dict[str, Any]) -> bool:
    """Kernel drops (ring overflow) and flow-table-full drops; broken when they took every packet."""
    lost = f["kernel_drops"] + f["meter_drops"]
    what = f"kernel {f['kernel_drops']}, flow table full {f['meter_drops']}"
    if lost and not f["pps"] and not f["pps_limit_drops"]:
        return d.add("drops", "broken", f"agent {agent} dropped every packet in the last minute ({what}): "
                     "it cannot keep up with the traffic")  # fmt: skip
    return d.add("drops", "warn" if lost else "ok", f"{what} drops, {f['pps']:.0f} packets/s kept in the last minute")


def _limits(d: Diagnosis, agent: str, f: dict[str, Any]) -> bool:
    """Drops by the agent's own limits: the pps cap (``limits.max_pps``), and CPU throttling."""
    capped, throttled = f["pps_limit_drops"], float(f["throttled_s"])
    held = f"; the CPU governor held capture back {throttled:.1f} s (limits.max_cpu_cores)" if throttled >= 0.05 else ""
    if capped and not f["pps"]:
        return d.add("limits", "broken", f"the pps cap (limits.max_pps) of agent {agent} dropped all {capped} packets "
                     f"of the last minute and kept none{held}")  # fmt: skip
    if capped or held:
        return d.add("limits", "warn", f"the pps cap dropped {capped} packets in the last minute{held}: records "
                     "are incomplete")  # fmt: skip
    return d.add("limits", "ok", "no packet dropped by the agent's limits (pps cap, CPU)")
