"""Incidents: scheduled departures from normal traffic (hourly backups, bursts, port scans)."""

from __future__ import annotations

import numpy as np

from cloudtap.schema.flow import CLOSE_CLIENT_RST, CLOSE_FIN, CLOSE_SERVER_REFUSED, CLOSE_SYN_UNANSWERED
from cloudtap.schema.packet import PROTO_TCP
from cloudtap.synth import _dtypes as dt
from cloudtap.synth._builder import SessionBuilder
from cloudtap.synth.scenario import BackupIncident, BurstIncident, ScanIncident, Scenario


def occurrences(inc: BackupIncident | BurstIncident | ScanIncident, scenario: Scenario) -> list[float]:
    """Offsets (s from the scenario start) at which an incident begins."""
    if inc.at_minute is not None:
        into_hour = (scenario.start_ns // 1_000_000_000) % 3600
        first = (inc.at_minute * 60.0 - into_hour) % 3600.0
    else:
        first = inc.at
    out: list[float] = []
    t = first
    while t < scenario.duration and len(out) < 100_000:
        out.append(t)
        if inc.every is None:
            break
        t += inc.every
    return out


def fixed_row(loss: float) -> np.ndarray:
    """Behaviour row of an incident: one exchange, the given segment loss."""
    row = np.zeros(dt.N_PARAMS)
    row[[dt.P_REQ_MIN, dt.P_REQ_MAX]] = 1
    row[dt.P_LOSS] = loss
    return row


def add_backup(b: SessionBuilder, inc: BackupIncident, services: dict[str, int]) -> None:
    """One paced one-way TCP push per occurrence (data client to server, pure ACKs back).

    Each ``contention`` effect slows its service's exchanges with servers on the pushing VM's host
    (or matching its ``servers``) for as long as the push sends.
    """
    name = inc.name or f"backup {inc.from_vm}->{inc.to_vm}"
    row = b.add_row(name, fixed_row(inc.loss))
    b.incident_names.append(name)
    offs = np.asarray(occurrences(inc, b.sc))
    n = offs.size
    b.add(
        n,
        start_ns=b.sc.start_ns + (offs * 1e9).astype(np.int64),
        client=b.cloud.resolve_vm(inc.from_vm),
        server=b.cloud.resolve_vm(inc.to_vm),
        proto=PROTO_TCP,
        kind=dt.KIND_BULK,
        close=CLOSE_FIN,
        svc=row,
        incident=len(b.incident_names) - 1,
        sport=inc.port,
        bulk_bytes=int(inc.rate_mbps * 1e6 / 8 * inc.duration),
        ns_per_byte=8000.0 / inc.rate_mbps,
    )
    source = b.cloud.resolve_vm(inc.from_vm)
    for effect in inc.contention:
        if effect.servers is not None:
            servers = b.cloud.select(effect.servers)
        else:
            servers = np.flatnonzero(b.cloud.vm_host == b.cloud.vm_host[source])
        b.effects.append((services[effect.service], servers))
        lo, hi = effect.server_ms
        for off in offs:
            t0 = b.sc.start_ns + int(off * 1e9)
            b.windows.append((len(b.effects) - 1, t0, t0 + int(inc.duration * 1e9), lo * 1e6, hi * 1e6))


def add_scan(b: SessionBuilder, inc: ScanIncident, open_ports: dict[int, set[int]]) -> None:
    """One SYN probe per target x port: open -> SYN-ACK then client RST, closed -> RST/ACK."""
    name = inc.name or f"scan from {inc.from_vm}"
    row = b.add_row(name, fixed_row(0.0))
    b.incident_names.append(name)
    ports = (
        np.asarray(inc.ports, np.int64)
        if isinstance(inc.ports, list)
        else np.arange(int(inc.ports[0]), int(inc.ports[1]) + 1)
    )
    scanner = b.cloud.resolve_vm(inc.from_vm)
    targets = b.cloud.select(inc.targets)
    targets = targets[targets != scanner]
    if targets.size == 0:
        return
    tgt = np.repeat(targets, ports.size)
    prt = np.tile(ports, targets.size)
    is_open = np.zeros(tgt.size, bool)
    for t in targets:
        sel = tgt == t
        is_open[sel] = np.isin(prt[sel], sorted(open_ports.get(int(t), ())))
    for off in occurrences(inc, b.sc):
        order = b.rng.permutation(tgt.size)
        starts = (
            b.sc.start_ns + int(off * 1e9) + (np.arange(tgt.size) * (1e9 / inc.rate_pps)).astype(np.int64)
        )
        filtered = b.rng.random(tgt.size) < inc.filtered
        op = is_open[order]
        close = np.where(op, CLOSE_CLIENT_RST, CLOSE_SERVER_REFUSED)
        close = np.where(filtered, CLOSE_SYN_UNANSWERED, close).astype(np.uint8)
        b.add(
            tgt.size,
            start_ns=starts,
            client=scanner,
            server=tgt[order],
            proto=PROTO_TCP,
            kind=dt.KIND_SCAN,
            close=close,
            svc=row,
            incident=len(b.incident_names) - 1,
            sport=prt[order],
            retries=0,
        )
