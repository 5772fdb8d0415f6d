"""The server's links of "why no data for VM X?", after the agent's: **rejected** (batches of the agent the
server refused, or the agent dead-lettered) -> **backpressure** (inserts failing: the server answers 503,
the agent retries) -> **retention** (rows stored, then dropped by the disk budget or expired) -> **ingest**
(records of the agent stored lately) -> **vm_traffic** (records of the VM) -> **tagging** (do they carry
the VM's inventory id?).

Each cause is checked before the symptom it explains (no recent record), so the first broken link names it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudtap.inventory.model import VM
from cloudtap.server.controller.diagnose_model import Diagnosis
from cloudtap.server.controller.diagnose_query import RAW_TABLES, StoreLookup
from cloudtap.server.controller.status import HeartbeatReport

#: HTTP answers that mean "not now, resend": the server pushes back
PUSHBACK = frozenset({429, 500, 502, 503, 504, 507})
GRACE_S = 60.0  #: a batch's log row and its data rows are stored within this of each other
TAG_WINDOW_S = 3600.0  #: tagging is judged on the VM's records of the hour before its last one

RecordsLookup = Callable[[str, list[str], list[str]], dict[str, Any]]


@dataclass
class ServerSide:
    """What the server knows beyond the controller; every piece is optional (None: not checked).

    Attributes:
        refusals: agent name -> its refused batches (``Ingestor.refusals_of``).
        backlog: the ingest queue now (``Coalescer.depth``), None when not coalescing.
        last_error: the ingest path's last error.
        drops: partitions the disk budget dropped at or after a time, of some tables (``Housekeeper.drops``).
        budget_bytes: ``storage.max_disk_gib`` in bytes.
        ttl_s: time to live per table (seconds; None: kept).
        vm_id: VM key -> its inventory id (0: unknown) as the ingest tagger assigns it.
        tagging: ``StoreLookup.tagging``.
        tag_errors: batches stored untagged because tagging raised.
    """

    refusals: Callable[[str], Any] | None = None
    backlog: Callable[[], Any] | None = None
    last_error: Callable[[], str] = lambda: ""
    drops: Callable[[float | None, tuple[str, ...]], list[Any]] | None = None
    budget_bytes: int | None = None
    ttl_s: dict[str, int | None] = field(default_factory=dict)
    vm_id: Callable[[str], int] | None = None
    tagging: Callable[[str, list[str], list[str], int, float], tuple[int, int]] | None = None
    tag_errors: Callable[[], int] = lambda: 0


def server_side(state: Any, lookup: StoreLookup | None) -> ServerSide:
    """The pieces of a FastAPI app's ``state``: ingestor, coalescer, housekeeper, inventory, settings."""
    from cloudtap.server.housekeeping import retention_policy

    ingestor = getattr(state, "ingestor", None)
    keeper = getattr(state, "housekeeper", None)
    inventory = getattr(state, "inventory", None)
    settings = getattr(state, "settings", None)

    def backlog() -> Any:
        merger = getattr(state, "ingest_coalescer", None)  # built at the first coalesced batch
        return merger.depth() if merger is not None else None

    ttl: dict[str, int | None] = {}
    if settings is not None:
        ttl = retention_policy(settings.storage).ttl_seconds()
    return ServerSide(
        refusals=getattr(ingestor, "refusals_of", None),
        backlog=backlog,
        last_error=(lambda: ingestor.stats.last_error) if ingestor is not None else (lambda: ""),
        drops=(lambda since, tables: keeper.drops(since, tables)) if keeper is not None else None,
        budget_bytes=getattr(keeper, "budget_bytes", None),
        ttl_s=ttl,
        vm_id=_ids_of(inventory),
        tagging=lookup.tagging if lookup is not None else None,
        tag_errors=(lambda: ingestor.stats.tag_errors) if ingestor is not None else (lambda: 0),
    )


def _ids_of(inventory: Any) -> Callable[[str], int] | None:
    """VM key -> the id the ingest tagger gives it (an ``InventoryStore``), None without one."""
    id_of = getattr(inventory, "id_of", None)
    return None if id_of is None else (lambda key: int(id_of("vm", key)))


@dataclass
class Subject:
    """The VM and the agent capturing it, as the agent-side walk found them."""

    agent: str
    report: HeartbeatReport
    vm: VM
    macs: list[str]
    ips: list[str]
    figures: dict[str, Any]  #: ``rates`` of the agent's heartbeats over the freshness window
    window_s: float


def storage_steps(
    d: Diagnosis, s: Subject, records: RecordsLookup | None, server: ServerSide | None, fresh_s: float,
    now: float | None = None,
) -> None:  # fmt: skip
    """Append the server's links to ``d``; stops at the first broken one."""
    now = time.time() if now is None else now
    srv = server or ServerSide()
    found = records(s.agent, s.macs, s.ips) if records is not None else {}
    last_any: float | None = float(found["last_any"]) if found.get("last_any") else None
    fresh = last_any is not None and now - last_any <= fresh_s
    if not _rejected(d, s, srv, last_any, fresh, now, fresh_s) or not _backpressure(d, s, srv, fresh):
        return
    if records is None:
        d.add("ingest", "skipped", "no flow store attached")
        return
    if found.get("error"):
        d.add("ingest", "warn", f"cannot query the store: {found['error']}", "")
        return
    if not _retention(d, s, srv, found, now):
        return
    rep = s.report
    if not last_any:
        d.add("ingest", "broken", f"no record from agent {s.agent} was ever stored (is its output.sink 'server'? "
              f"ship errors: {rep.errors[-1] if rep.errors else 'none reported'})")  # fmt: skip
        return
    age = now - last_any
    if not fresh:
        d.add("ingest", "broken", f"records from agent {s.agent} stopped {age:.0f} s ago "
              f"({rep.ship_pending_batches} batches waiting in its spool)")  # fmt: skip
        return
    d.add("ingest", "ok", f"last record from agent {s.agent} stored {max(age, 0):.0f} s ago")
    last_vm = found.get("last_vm")
    if not last_vm:
        d.add("vm_traffic", "broken", f"agent {s.agent}'s records hold no traffic of VM {s.vm.name} "
              f"(MACs {', '.join(s.macs) or '-'}, IPs {', '.join(s.ips) or '-'}): is the VM silent?")  # fmt: skip
        return
    d.add("vm_traffic", "ok", f"last record of VM {s.vm.name} stored {max(now - last_vm, 0):.0f} s ago")
    _tagging(d, s, srv, float(last_vm))


def _rejected(
    d: Diagnosis, s: Subject, srv: ServerSide, last_any: float | None, fresh: bool, now: float, window: float
) -> bool:
    ref = srv.refusals(s.agent) if srv.refusals is not None else None
    recent = ref is not None and now - ref.last_at <= window
    dead = int(s.figures.get("dead_letters", 0))
    parts = []
    if ref is not None:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(ref.by_reason.items()))
        parts.append(f"the server refused {ref.count} batch(es) of agent {s.agent} ({reasons}), the last "
                     f"{max(now - ref.last_at, 0):.0f} s ago: {ref.last_error}")  # fmt: skip
    if dead:
        parts.append(f"the agent dead-lettered {dead} batch(es) in the last {s.window_s:.0f} s "
                     f"({s.report.ship_dead_letters} since it started)")  # fmt: skip
    if not recent and not dead:
        what = "; earlier " + parts[0] if parts else ""
        return d.add("rejected", "ok", f"no batch of agent {s.agent} refused in the last {window:.0f} s{what}", "")
    newer = ref is not None and recent and (last_any is None or ref.last_at > last_any)
    return d.add("rejected", "warn" if fresh and not newer else "broken", "; ".join(parts))


def _backpressure(d: Diagnosis, s: Subject, srv: ServerSide, fresh: bool) -> bool:
    depth = srv.backlog() if srv.backlog is not None else None
    failed = int(getattr(depth, "failed_groups", 0) or 0)
    waiting = int(getattr(depth, "batches", 0) or 0)
    rep = s.report
    retries = int(s.figures.get("ship_retries", 0))
    pushed = rep.ship_last_status in PUSHBACK and retries > 0
    if not failed and not pushed:
        queue = f" ({waiting} batches in the ingest queue)" if depth is not None else ""
        return d.add("backpressure", "ok", f"no sign of ingest backpressure{queue}", "")
    parts = []
    if failed:
        error = srv.last_error()
        parts.append(f"the server's inserts are failing: {failed} coalesced insert(s) wait to be written again "
                     f"({waiting} batches not answered; agents get HTTP 503 and resend)"
                     + (f"; last error: {error}" if error else ""))  # fmt: skip
    if pushed:
        parts.append(f"agent {s.agent} retried {retries} send(s) in the last {s.window_s:.0f} s (last answer HTTP "
                     f"{rep.ship_last_status}); {rep.ship_pending_batches} batches wait in its spool")  # fmt: skip
    return d.add("backpressure", "warn" if fresh else "broken", "; ".join(parts))


def _retention(d: Diagnosis, s: Subject, srv: ServerSide, found: dict[str, Any], now: float) -> bool:
    logged, last_any = found.get("last_logged"), found.get("last_any")
    if "last_logged" not in found:
        return True
    if not logged or (last_any and float(last_any) >= float(logged) - GRACE_S):
        recent = srv.drops(now - 86_400, RAW_TABLES) if srv.drops is not None else []
        if recent:
            return d.add("retention", "warn", f"the disk budget dropped {_partitions(recent)} in the last day: older "
                         f"records of VM {s.vm.name} may be gone")  # fmt: skip
        return d.add("retention", "ok", "no record of this agent was removed by retention", "")
    lost = f"agent {s.agent}'s batches were stored (the last {max(now - float(logged), 0):.0f} s ago) but "
    lost += "its records are gone" if not last_any else f"its records after {max(now - float(last_any), 0):.0f} s ago are gone"
    drops = srv.drops(float(logged) - GRACE_S, RAW_TABLES) if srv.drops is not None else []
    if drops:
        budget = f"{srv.budget_bytes / (1 << 30):g} GiB" if srv.budget_bytes else "set"
        return d.add("retention", "broken", f"{lost}: the disk budget (storage.max_disk_gib {budget}) dropped "
                     f"{_partitions(drops)}")  # fmt: skip
    ttls = [t for name in RAW_TABLES if (t := srv.ttl_s.get(name))]
    if ttls and now - float(logged) > min(ttls):
        return d.add("retention", "broken", f"{lost}: they expired (TTL {min(ttls) / 86_400:g} days, "
                     "storage.ttl_days / storage.retention_days)")  # fmt: skip
    return d.add("retention", "broken", f"{lost} from {' and '.join(RAW_TABLES)}, not by this server's disk budget "
                 "(TTL, by hand, or the tables were recreated)")  # fmt: skip


def _partitions(drops: list[Any]) -> str:
    """``flow_log 2024-05-01 (dropped 12:00:03 UTC)``, ... for the last few dropped partitions."""
    shown = []
    for r in drops[-4:]:
        day = time.strftime("%Y-%m-%d", time.gmtime(r.time_from)) if r.time_from is not None else r.partition_id
        span = "" if r.time_to is None or r.time_from is None or r.time_to - r.time_from <= 86_400 else " (a month)"
        shown.append(f"{r.table} {day}{span} (record time, UTC; dropped {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(r.dropped_at))} UTC)")
    more = f" and {len(drops) - 4} more" if len(drops) > 4 else ""
    return f"{len(drops)} partition(s): " + ", ".join(shown) + more


def _tagging(d: Diagnosis, s: Subject, srv: ServerSide, last_vm: float) -> None:
    if srv.vm_id is None or srv.tagging is None:
        d.add("tagging", "skipped", "no inventory tags records on this server", "")
        return
    vid = srv.vm_id(s.vm.key)
    rows, tagged = srv.tagging(s.agent, s.macs, s.ips, vid, last_vm - TAG_WINDOW_S)
    errors = srv.tag_errors()
    why = f"; {errors} batch(es) stored untagged because tagging failed" if errors else ""
    if vid == 0:
        d.add("tagging", "broken", f"the inventory the server tags records with does not know VM {s.vm.name} "
              f"(key {s.vm.key}): its {rows} record(s) of the last hour carry no VM id{why}")  # fmt: skip
    elif rows and not tagged:
        d.add("tagging", "broken", f"{rows} record(s) of VM {s.vm.name} (its MACs/IPs) stored in the hour before its "
              f"last one, none tagged with its id {vid}: views by VM or project miss them (the inventory did not "
              f"list these addresses for the VM at the flows' time?){why}")  # fmt: skip
    elif tagged < rows:
        d.add("tagging", "warn", f"{rows - tagged} of {rows} record(s) of VM {s.vm.name} in the last hour carry no "
              f"VM id{why}")  # fmt: skip
    else:
        d.add("tagging", "ok", f"{tagged} record(s) of VM {s.vm.name} in the last hour carry its id {vid}")
