"""``burst``, ``retransmission_spike``, ``handshake_failures`` and ``scan`` on the cycle's minute.

* burst: an edge's minute (bytes) at least ``burst_min_bytes`` and a robust z-score above ``burst_k``
  against its own last ``burst_history_minutes`` (median / MAD, idle minutes included); the biggest
  ``burst_detail`` are then measured at 1 s with :func:`~cloudtap.server.analyse.bursts.find_bursts`
  against their 1 s series of the 10 minutes before (the seconds that burst, their peak and z).
* retransmission_spike: retransmissions >= ``retrans_min``, >= ``retrans_ratio`` of the edge's packets,
  and a robust z-score above ``retrans_k`` against its last hour.
* handshake_failures: >= ``failed_min`` failed handshakes, >= ``failed_ratio`` of the flows opened.
* scan: one source with failed handshakes to >= ``scan_min_targets`` distinct server:port, and failed
  flows >= ``scan_failed_ratio`` of what it opened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudtap.server.analyse.bursts import find_bursts
from cloudtap.server.analyse.robust import dense_series
from cloudtap.server.findings.context import Cycle, edge_args, peer_args
from cloudtap.server.findings.history import history, robust_rows
from cloudtap.server.findings.model import Detection, Severity, Subject
from cloudtap.server.store.ddl import ident

DETAIL_REFERENCE_S = 600  #: seconds of 1 s series before the minute, the reference of the 1 s bursts
MAX_SCAN_SAMPLE = 10


def detect_traffic(cycle: Cycle) -> list[Detection]:
    """Bursts, retransmission spikes, handshake failures and scans of the minute."""
    e = cycle.edges
    if not len(e):
        return []
    cfg = cycle.config
    wanted = (
        (e.bytes >= cfg.burst_min_bytes) | (e["retrans"] >= cfg.retrans_min) | (e["failed"] >= cfg.failed_min)
    )
    hist = history(cycle.store, e, cycle.t0, cfg.burst_history_minutes, wanted)
    return _bursts(cycle, hist) + _retrans(cycle, hist) + _failures(cycle, hist) + _scans(cycle)


def _subjects(cycle: Cycle, idx: np.ndarray) -> list[Subject]:
    return cycle.subjects([cycle.edges.row(int(i)) for i in idx])


def _bursts(cycle: Cycle, hist: dict[str, np.ndarray]) -> list[Detection]:
    cfg, e = cycle.config, cycle.edges
    value = e.bytes
    med, scale = robust_rows(hist["bytes"], value)
    z = (value - med) / scale
    idx = np.flatnonzero((value >= cfg.burst_min_bytes) & (z > cfg.burst_k) & (value > med))
    idx = idx[np.argsort(-value[idx], kind="stable")]
    out = []
    for rank, (i, s) in enumerate(zip(idx, _subjects(cycle, idx), strict=True)):
        seconds = _seconds(cycle, s) if rank < cfg.burst_detail else None
        severity: Severity = (
            "critical" if z[i] > 3 * cfg.burst_k and value[i] >= 10 * cfg.burst_min_bytes else "warning"
        )
        figures: dict[str, Any] = {"bytes": float(value[i]), "z": round(float(z[i]), 2),
                                   "bytes_c2s": float(e["c2s"][i]), "bytes_s2c": float(e["s2c"][i])}  # fmt: skip
        if seconds is not None:
            figures["seconds"] = seconds
        out.append(Detection(
            kind="burst", severity=severity, subject=s, time_from=cycle.t0, time_to=cycle.t1,
            summary=f"burst on {s.label}: {value[i] / 1e6:.3g} MB in a minute, z {z[i]:.1f} against its last "
                    f"{cfg.burst_history_minutes} min (median {med[i] / 1e6:.3g} MB)",
            figures=figures,
            baseline={"minutes": cfg.burst_history_minutes, "median_bytes": float(med[i]),
                      "sigma_bytes": round(float(scale[i]), 1), "k": cfg.burst_k},
            reproduce=f"cloudtap bursts {cycle.window_args(cycle.t0 - 3600)} {peer_args(s)} --step 1s",
        ))  # fmt: skip
    return out


def _seconds(cycle: Cycle, s: Subject) -> list[dict[str, Any]]:
    """The 1 s bursts inside the minute, against the edge's 1 s series of the 10 minutes before."""
    r0 = cycle.t0 - DETAIL_REFERENCE_S
    table = cycle.store.query_arrow(
        f"SELECT t, max(b) AS b FROM (SELECT toUnixTimestamp(time) AS t, agent_id, "
        f"sum(bytes_c2s + bytes_s2c) AS b FROM {ident(cycle.store.database)}.edge_1s "
        f"WHERE client_ip = toIPv6({{c:String}}) AND server_ip = toIPv6({{s:String}}) AND server_port = {{p:UInt16}} "
        f"AND proto = {{pr:UInt8}} AND time >= toDateTime({{r0:Int64}}, 'UTC') AND time < toDateTime({{t1:Int64}}, 'UTC') "
        f"GROUP BY t, agent_id) GROUP BY t",
        {"c": s.client_ip, "s": s.server_ip, "p": s.server_port or 0, "pr": s.proto or 0, "r0": r0, "t1": cycle.t1},
    )  # fmt: skip
    series = dense_series(table["t"].to_numpy(), table["b"].to_numpy(), r0, DETAIL_REFERENCE_S + 60, 1)
    times = np.arange(r0, cycle.t1, dtype=np.int64)
    ref, now = series[:DETAIL_REFERENCE_S], series[DETAIL_REFERENCE_S:]
    found, _, _ = find_bursts(times[DETAIL_REFERENCE_S:], now, 1, reference=ref, max_gap=1, max_bursts=5)
    return [b.model_dump() for b in found]


def _retrans(cycle: Cycle, hist: dict[str, np.ndarray]) -> list[Detection]:
    cfg, e = cycle.config, cycle.edges
    r = e["retrans"]
    med, scale = robust_rows(hist["retrans"], r)
    z = (r - med) / scale
    ratio = r / np.maximum(e["packets"], 1.0)
    idx = np.flatnonzero((r >= cfg.retrans_min) & (ratio >= cfg.retrans_ratio) & (z > cfg.retrans_k))
    out = []
    for i, s in zip(idx, _subjects(cycle, idx), strict=True):
        out.append(Detection(
            kind="retransmission_spike", severity="warning", subject=s, time_from=cycle.t0, time_to=cycle.t1,
            summary=f"retransmissions on {s.label}: {int(r[i])} ({ratio[i]:.1%} of packets), z {z[i]:.1f}",
            figures={"retrans": float(r[i]), "packets": float(e["packets"][i]), "ratio": round(float(ratio[i]), 4),
                     "z": round(float(z[i]), 2)},
            baseline={"minutes": cfg.burst_history_minutes, "median_retrans": float(med[i]),
                      "sigma_retrans": round(float(scale[i]), 2), "k": cfg.retrans_k},
            reproduce=f"cloudtap compare {cycle.window_args()} --baseline before --metric retrans --ip {s.client_ip} "
                      f"--port {s.server_port}",
        ))  # fmt: skip
    return out


def _failures(cycle: Cycle, hist: dict[str, np.ndarray]) -> list[Detection]:
    cfg, e = cycle.config, cycle.edges
    failed, opened = e["failed"], np.maximum(e["opened"], e["failed"])
    ratio = failed / np.maximum(opened, 1.0)
    idx = np.flatnonzero((failed >= cfg.failed_min) & (ratio >= cfg.failed_ratio))
    med = np.median(hist["failed"], axis=1) if hist["failed"].shape[1] else np.zeros(len(e))
    out = []
    for i, s in zip(idx, _subjects(cycle, idx), strict=True):
        out.append(Detection(
            kind="handshake_failures", severity="warning", subject=s, time_from=cycle.t0, time_to=cycle.t1,
            summary=f"failed handshakes on {s.label}: {int(failed[i])} of {int(opened[i])} flows",
            figures={"failed": float(failed[i]), "opened": float(opened[i]), "ratio": round(float(ratio[i]), 3)},
            baseline={"minutes": cfg.burst_history_minutes, "median_failed_per_minute": float(med[i])},
            reproduce=f"cloudtap drill {cycle.window_args()} {edge_args(s)}",
        ))  # fmt: skip
    return out


def _scans(cycle: Cycle) -> list[Detection]:
    cfg, e = cycle.config, cycle.edges
    failing = e["failed"] > 0
    clients, inverse = np.unique(e["client_ip"].astype(str), return_inverse=True)
    targets = np.bincount(inverse, weights=failing.astype(np.float64), minlength=len(clients))
    failed = np.bincount(inverse, weights=e["failed"], minlength=len(clients))
    opened = np.bincount(inverse, weights=np.maximum(e["opened"], e["failed"]), minlength=len(clients))
    ratio = failed / np.maximum(opened, 1.0)
    hits = np.flatnonzero((targets >= cfg.scan_min_targets) & (ratio >= cfg.scan_failed_ratio))
    out = []
    for c in hits:
        mine = np.flatnonzero((inverse == c) & failing)
        first = e.row(int(mine[0]))
        s = cycle.subjects([{**first, "server_ip": "", "server_port": None, "proto": None, "server_project_id": 0,
                             "server_vm_id": 0}], kind="source")[0]  # fmt: skip
        hosts = np.unique(e["server_ip"][mine].astype(str))
        ports = np.unique(e["server_port"][mine])
        sample = [f"{e['server_ip'][j]}:{int(e['server_port'][j])}" for j in mine[:MAX_SCAN_SAMPLE]]
        severity: Severity = "critical" if targets[c] >= 5 * cfg.scan_min_targets else "warning"
        out.append(Detection(
            kind="scan", severity=severity, subject=s, time_from=cycle.t0, time_to=cycle.t1,
            summary=f"scan from {s.label}: {int(targets[c])} server:port failed ({len(hosts)} hosts, "
                    f"{len(ports)} ports), {ratio[c]:.0%} of its flows failed",
            figures={"targets": int(targets[c]), "hosts": int(len(hosts)), "ports": int(len(ports)),
                     "failed": float(failed[c]), "opened": float(opened[c]), "sample": sample,
                     "port_range": [int(ports.min()), int(ports.max())]},
            baseline={"min_targets": cfg.scan_min_targets, "min_failed_ratio": cfg.scan_failed_ratio},
            reproduce=f"cloudtap drill {cycle.window_args()} --ip {s.client_ip}",
        ))  # fmt: skip
    return out
