"""Sessions: who talks to whom, when, and how each conversation will go, as numpy columns.

Every service yields Poisson arrivals over the scenario; incidents add their own sessions. Each
session gets a client and a server VM, an ephemeral client port (32768-60999, handed out in time
order per client so 5-tuples do not repeat), handshake half-RTTs, and a planned outcome (normal
close, RST, refused, unanswered, zero-window episode). The packet-level detail is left to the
planning kernels (:func:`plan_packets`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudtap.errors import ConfigError
from cloudtap.schema.flow import (
    CLOSE_CLIENT_RST,
    CLOSE_FIN,
    CLOSE_SERVER_REFUSED,
    CLOSE_SERVER_RST,
    CLOSE_SYN_UNANSWERED,
    CLOSE_TIMEOUT,
)
from cloudtap.schema.packet import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from cloudtap.synth import _dtypes as dt
from cloudtap.synth._builder import EPHEMERAL_COUNT, EPHEMERAL_LOW, SessionBuilder, SessionSet
from cloudtap.synth._plan_dgram import plan_dgram
from cloudtap.synth._plan_kernels import plan_tcp
from cloudtap.synth.cloud import Cloud
from cloudtap.synth.incidents import add_backup, add_scan, occurrences
from cloudtap.synth.scenario import (
    BackupIncident,
    BurstIncident,
    ScanIncident,
    Scenario,
    ServiceSpec,
)

__all__ = ["EPHEMERAL_COUNT", "EPHEMERAL_LOW", "SessionSet", "build_sessions", "occurrences", "plan_packets"]

_PROTO = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP}
_KIND = {"tcp": dt.KIND_TCP, "udp": dt.KIND_UDP, "icmp": dt.KIND_ICMP}
#: request bytes, response bytes, think time (ms) when a service leaves them out
_DEFAULTS = {
    "tcp": ((100.0, 1500.0), (200.0, 20000.0), (5.0, 200.0)),
    "udp": ((40.0, 80.0), (60.0, 300.0), (1.0, 100.0)),
    "icmp": ((56.0, 56.0), (56.0, 56.0), (1000.0, 1000.0)),
}


def _service_row(spec: ServiceSpec, faults: dict[str, Any]) -> np.ndarray:
    req_b, resp_b, think = _DEFAULTS[spec.proto]
    req_b = spec.request_bytes or req_b
    resp_b = spec.response_bytes or resp_b
    think = spec.think_ms or think
    row = np.zeros(dt.N_PARAMS)
    row[dt.P_REQ_MIN], row[dt.P_REQ_MAX] = spec.requests
    row[dt.P_REQB_MIN], row[dt.P_REQB_MAX] = req_b
    row[dt.P_RESPB_MIN], row[dt.P_RESPB_MAX] = resp_b
    row[dt.P_THINK_MIN], row[dt.P_THINK_MAX] = think[0] * 1e6, think[1] * 1e6
    row[dt.P_SRV_MIN], row[dt.P_SRV_MAX] = spec.server_ms[0] * 1e6, spec.server_ms[1] * 1e6
    row[dt.P_LOSS] = faults["loss"]
    row[dt.P_CLOSE_BY_SERVER] = faults["close_by_server"]
    row[dt.P_APP] = dt.APP_CODES[spec.app]
    row[dt.P_ERRORS] = spec.errors
    return row


def _pairs(cloud: Cloud, spec: ServiceSpec) -> tuple[np.ndarray, list[np.ndarray]]:
    """Clients that have at least one server, and for each client project the server candidates."""
    clients = cloud.select(spec.clients)
    servers = cloud.select(spec.servers)
    n_proj = len(cloud.project_names)
    if spec.same_project:
        by_proj = [servers[cloud.vm_project[servers] == p] for p in range(n_proj)]
    else:
        by_proj = [servers] * n_proj
    ok = (
        np.asarray([any(v != c for v in by_proj[cloud.vm_project[c]]) for c in clients], dtype=bool)
        if clients.size
        else np.zeros(0, bool)
    )
    return clients[ok], by_proj


def check_references(scenario: Scenario, cloud: Cloud) -> None:
    """Check selectors, VM names and fault mixes that the schema alone cannot.

    Raises:
        ConfigError: naming the service or incident and the offending key.
    """
    for i, spec in enumerate(scenario.services):
        where = f"services.{i} ({spec.name})"
        for key in ("clients", "servers"):
            if cloud.select(getattr(spec, key)).size == 0:
                raise ConfigError(f"{where}: '{key}' selector {getattr(spec, key)!r} matches no VM")
        if _pairs(cloud, spec)[0].size == 0:
            raise ConfigError(
                f"{where}: no client has a server other than itself"
                + (" in its own project" if spec.same_project else "")
            )
        f = scenario.effective_faults(spec.faults)
        if f["refused"] + f["unanswered"] + f["client_rst"] + f["server_rst"] > 1:
            raise ConfigError(f"{where}: refused + unanswered + client_rst + server_rst exceeds 1")
    names = {s.name for s in scenario.services}
    for i, inc in enumerate(scenario.incidents):
        where = f"incidents.{i} ({inc.kind})"
        try:
            if isinstance(inc, BackupIncident):
                if cloud.resolve_vm(inc.from_vm) == cloud.resolve_vm(inc.to_vm):
                    raise ConfigError("from_vm and to_vm are the same VM")
                for effect in inc.contention:
                    if effect.service not in {s.name for s in scenario.services}:
                        raise ConfigError(f"contention: unknown service {effect.service!r}")
                    if effect.servers is not None and cloud.select(effect.servers).size == 0:
                        raise ConfigError(f"contention: 'servers' selector {effect.servers!r} matches no VM")
            elif isinstance(inc, ScanIncident):
                cloud.resolve_vm(inc.from_vm)
                if cloud.select(inc.targets).size == 0:
                    raise ConfigError(f"'targets' selector {inc.targets!r} matches no VM")
            elif isinstance(inc, BurstIncident) and inc.service not in names:
                raise ConfigError(f"unknown service {inc.service!r} (known: {', '.join(sorted(names))})")
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None


def add_service(
    b: SessionBuilder, idx: int, spec: ServiceSpec, starts: np.ndarray, incident: int = -1
) -> None:
    """Sessions of ``spec`` starting at ``starts``: random client/server pairs, planned outcomes."""
    rng = b.rng
    clients, by_proj = _pairs(b.cloud, spec)
    n = starts.shape[0]
    if n == 0:
        return
    client = clients[rng.integers(0, clients.size, n)]
    server = np.full(n, -1, np.int64)
    proj = b.cloud.vm_project[client]
    for _ in range(20):
        todo = np.flatnonzero((server < 0) | (server == client))
        if todo.size == 0:
            break
        for p in np.unique(proj[todo]):
            sel = todo[proj[todo] == p]
            cands = by_proj[p]
            server[sel] = cands[rng.integers(0, cands.size, sel.size)]
    keep = (server >= 0) & (server != client)
    client, server, starts = client[keep], server[keep], starts[keep]
    n = int(keep.sum())
    faults = b.sc.effective_faults(spec.faults)
    u = rng.random(n)
    if spec.proto == "tcp":
        close = np.full(n, CLOSE_FIN, np.uint8)
        edge = 0.0
        for code, key in (
            (CLOSE_SERVER_REFUSED, "refused"),
            (CLOSE_SYN_UNANSWERED, "unanswered"),
            (CLOSE_CLIENT_RST, "client_rst"),
            (CLOSE_SERVER_RST, "server_rst"),
        ):
            close[(u >= edge) & (u < edge + faults[key])] = code
            edge += faults[key]
        zw = rng.random(n) < faults["zero_window"]
    else:
        close = np.where(u < faults["unanswered"], CLOSE_SYN_UNANSWERED, CLOSE_TIMEOUT).astype(np.uint8)
        zw = np.zeros(n, bool)
    lo, hi = faults["syn_retries"]
    retries = rng.integers(int(lo), int(hi) + 1, n)
    b.add(
        n,
        start_ns=starts,
        client=client,
        server=server,
        proto=_PROTO[spec.proto],
        kind=_KIND[spec.proto],
        close=close,
        svc=idx,
        incident=incident,
        zw=zw,
        retries=retries,
        sport=spec.port or 0,
    )


def build_sessions(scenario: Scenario, cloud: Cloud) -> SessionSet:
    """Draw every session of the scenario (deterministic for its seed).

    Args:
        scenario: the validated scenario.
        cloud: its resolved cloud.

    Returns:
        The sessions, sorted by start time.
    """
    check_references(scenario, cloud)
    rng = np.random.default_rng(scenario.seed)
    b = SessionBuilder(scenario, cloud, rng)
    by_name: dict[str, int] = {}
    open_ports: dict[int, set[int]] = {}
    for spec in scenario.services:
        idx = b.add_row(spec.name, _service_row(spec, scenario.effective_faults(spec.faults)), spec)
        by_name[spec.name] = idx
        add_service(b, idx, spec, b.poisson_starts(spec.rate, 0.0, scenario.duration))
        if spec.proto == "tcp" and spec.port is not None:
            for vm in cloud.select(spec.servers):
                open_ports.setdefault(int(vm), set()).add(spec.port)
    specs = {s.name: s for s in scenario.services}
    for inc in scenario.incidents:
        if isinstance(inc, BackupIncident):
            add_backup(b, inc, by_name)
        elif isinstance(inc, ScanIncident):
            add_scan(b, inc, open_ports)
        else:
            name = inc.name or f"burst of {inc.service}"
            b.incident_names.append(name)
            spec = specs[inc.service]
            for off in occurrences(inc, scenario):
                t1 = min(off + inc.duration, scenario.duration)
                starts = b.poisson_starts(spec.rate * (inc.multiplier - 1.0), off, t1)
                add_service(b, by_name[inc.service], spec, starts, incident=len(b.incident_names) - 1)
    return b.finish()


def _run(kernel: Any, est: int, *args: Any) -> np.ndarray:
    """Call a planning kernel; if its estimate was short, rerun with the exact size (same seed)."""
    plan = np.zeros(max(est, 1024), dt.PLAN_DTYPE)
    n = kernel(plan, *args)
    if n > plan.shape[0]:
        plan = np.zeros(n, dt.PLAN_DTYPE)
        n = kernel(plan, *args)
    return plan[:n]


def plan_packets(sessions: SessionSet, end_ns: int, mss: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plan every packet of every session, sorted by time.

    Args:
        sessions: the sessions.
        end_ns: scenario end; packets at or after it are dropped.
        mss: TCP maximum segment size.

    Returns:
        (plan sorted by timestamp, handshake times int64 [n, 3], truncated flags uint8 [n]).
    """
    c = sessions.cols
    n = len(sessions)
    hs_times = np.full((n, 3), -1, np.int64)
    trunc = np.zeros(n, np.uint8)
    kind = c["kind"]
    tcp = np.flatnonzero(kind <= dt.KIND_SCAN).astype(np.int64)
    dgram = np.flatnonzero(kind > dt.KIND_SCAN).astype(np.int64)
    p = sessions.params
    bulk_est = int((c["bulk_bytes"].sum() // max(mss, 1)) * 1.6)
    tcp_plan = _run(
        plan_tcp,
        tcp.size * 40 + bulk_est,
        sessions.kernel_seeds[0],
        end_ns,
        mss,
        tcp,
        c["start_ns"],
        kind,
        c["close"],
        c["svc"],
        c["hs"],
        c["hc"],
        c["zw"],
        c["retries"],
        c["bulk_bytes"],
        c["ns_per_byte"],
        p,
        c["slow"],
        sessions.windows,
        sessions.window_srv,
        hs_times,
        trunc,
    )
    dgram_plan = _run(
        plan_dgram,
        dgram.size * 8,
        sessions.kernel_seeds[1],
        end_ns,
        dgram,
        c["start_ns"],
        kind,
        c["close"],
        c["svc"],
        c["hs"],
        p,
        c["slow"],
        sessions.windows,
        sessions.window_srv,
        trunc,
    )
    plan = np.concatenate([tcp_plan, dgram_plan])
    plan = plan[np.argsort(plan["ts"], kind="stable")]
    return plan, hs_times, trunc
